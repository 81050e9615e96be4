"""The packed layout of the MXFP4 codes and scales (kernels/mxfp4_pack.py) and its cache.

pack_codes      per 128-element step, word c of 32-block b at 4c + b, its 8 codes at NIBBLE_PLACES; rows padded
                with code 0 to whole steps. Order "mma_b": word (b, c) holds elements 8c .. 8c + 7 of its block;
                "mma_a": word element q + 4p is block element 8q + 2c + p
unpack_codes    its inverse
pack_scales     padded with code 127 to rows of a multiple of 16 codes; plain iff every code is in [1, 254]
packed_codes    one copy per tensor while it is unchanged (packed_scales alike); an in-place change repacks;
                the entry dies with the tensor
"""

from __future__ import annotations

import gc

import pytest
import torch

from moe_cts.kernels import mxfp4_pack as mp


def _codes(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, shape, dtype=torch.uint8, generator=g)


def _words(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().view(torch.int32)


def _placed(words: torch.Tensor) -> torch.Tensor:
    """Reference-order words (int32) with their codes moved to NIBBLE_PLACES, written out bit by bit."""
    out = torch.zeros_like(words, dtype=torch.int64)
    w = words.to(torch.int64) & 0xFFFFFFFF
    for i in range(8):  # element i: register i % 4, half i // 4
        mag, sign = mp.NIBBLE_PLACES[i % 4]
        off = 16 * (i // 4)
        for bit in range(3):
            out |= ((w >> (4 * i + bit)) & 1) << (mag + bit + off)
        out |= ((w >> (4 * i + 3)) & 1) << (sign + off)
    return (out - (out >= 2**31) * 2**32).to(torch.int32)


def test_nibble_places_cover_every_bit_of_a_word_once():
    bits = []
    for mag, sign in mp.NIBBLE_PLACES:
        for off in (0, 16):
            bits += [mag + off, mag + 1 + off, mag + 2 + off, sign + off]
    assert sorted(bits) == list(range(32))


@pytest.mark.parametrize("k", [32, 96, 128, 160, 2880])  # whole steps and tails of 1-3 blocks
def test_every_step_holds_its_words_word_major_and_the_tail_is_code_zero(k):
    codes = _codes(3, 5, k // 2)
    packed = mp.pack_codes(codes)
    kp = mp.packed_k(k)
    assert packed.shape == (3, 5, kp // 2) and kp % 128 == 0 and kp - k < 128
    ref = torch.nn.functional.pad(codes, (0, (kp - k) // 2))
    got = _words(packed).view(3, 5, kp // 128, 4, 4)  # [step][4c + b]
    want = _placed(_words(ref)).view(3, 5, kp // 128, 4, 4)  # [step][4b + c]
    assert torch.equal(got, want.transpose(-1, -2))
    assert torch.equal(mp.unpack_codes(packed, k), codes)
    assert not mp.unpack_codes(packed, kp)[..., k // 2 :].any()  # the padding is code 0


def _element_of(order: str, c: int, e: int) -> int:
    """The block element that word c's element e (register e % 4, half e // 4) holds, written out."""
    q, p = e % 4, e // 4
    return 8 * c + e if order == "mma_b" else 8 * q + 2 * c + p


@pytest.mark.parametrize("order", mp.PACK_ORDERS)
@pytest.mark.parametrize("k", [32, 160, 256])
def test_each_order_puts_each_element_where_its_decoded_register_reads_it(order, k):
    codes = _codes(2, 3, k // 2, seed=k)
    nib = torch.stack([codes & 0xF, codes >> 4], dim=-1).flatten(-2).to(torch.int64)  # (.., k) element codes
    words = _words(mp.pack_codes(codes, order)).to(torch.int64) & 0xFFFFFFFF
    steps = mp.packed_k(k) // 128
    for step in range(steps):
        for b in range(4):
            for c in range(4):
                w = words[..., step * 16 + 4 * c + b]
                for e in range(8):
                    mag, sign = mp.NIBBLE_PLACES[e % 4]
                    off = 16 * (e // 4)
                    got = ((w >> (mag + off)) & 7) | (((w >> (sign + off)) & 1) << 3)
                    kel = 128 * step + 32 * b + _element_of(order, c, e)
                    want = nib[..., kel] if kel < k else torch.zeros_like(got)
                    assert torch.equal(got, want), (step, b, c, e)
    assert torch.equal(mp.unpack_codes(mp.pack_codes(codes, order), k, order), codes)


def test_the_cache_keeps_one_copy_per_order():
    codes = _codes(2, 3, 64, seed=3)
    a, b = mp.packed_codes(codes, "mma_a"), mp.packed_codes(codes, "mma_b")
    assert not torch.equal(a, b)
    assert mp.packed_codes(codes, "mma_a") is a and mp.packed_codes(codes) is b
    mp.drop_packed(codes)
    assert mp.packed_codes(codes, "mma_a") is not a


def test_an_unknown_order_is_refused():
    with pytest.raises(ValueError, match="order"):
        mp.pack_codes(_codes(1, 1, 16), "mma_c")


def test_a_strided_view_packs_like_its_contiguous_copy():
    wide = _codes(4, 200)
    view = wide[:, 8:136]  # K = 256, rows 200 bytes apart
    assert torch.equal(mp.pack_codes(view), mp.pack_codes(view.contiguous()))


def test_meta_tensors_pack_to_their_shape():  # the AOT matrix captures launches on meta tensors
    meta = torch.empty((2, 8, 48), dtype=torch.uint8, device="meta")
    assert mp.pack_codes(meta).shape == (2, 8, 64)
    ps = mp.pack_scales(torch.empty((2, 8, 3), dtype=torch.uint8, device="meta"))
    assert ps.scales.shape == (2, 8, 16) and ps.plain  # the kernel real checkpoints run


def test_the_cache_keeps_one_copy_until_the_codes_change_in_place():
    codes = _codes(2, 3, 64, seed=1)
    first = mp.packed_codes(codes)
    assert mp.packed_codes(codes) is first
    codes[0, 0, 0] ^= 0xFF  # an in-place change bumps the version counter: repacked
    second = mp.packed_codes(codes)
    assert second is not first and torch.equal(mp.unpack_codes(second, 128), codes)
    other = codes.clone()  # an equal tensor is another key: identity, not value
    assert mp.packed_codes(other) is not second
    mp.drop_packed(codes)
    assert mp.packed_codes(codes) is not second


def test_the_entry_dies_with_the_codes():
    mp.drop_packed()
    codes = _codes(2, 64, seed=2)
    mp.packed_codes(codes)
    assert len(mp._CACHE) == 1
    del codes
    gc.collect()
    assert len(mp._CACHE) == 0


@pytest.mark.parametrize("kb", [3, 4, 16, 90])
def test_scales_pad_with_code_127_to_16_byte_rows(kb):
    g = torch.Generator().manual_seed(kb)
    scales = torch.randint(0, 256, (2, 3, kb), generator=g).to(torch.uint8)
    packed = mp.pack_scales(scales).scales
    assert packed.shape == (2, 3, -(-kb // 16) * 16) and packed.is_contiguous()
    assert torch.equal(packed[..., :kb], scales) and bool((packed[..., kb:] == 127).all())
    assert torch.equal(mp.pack_scales(scales.transpose(0, 1)).scales, packed.transpose(0, 1))  # any strides


@pytest.mark.parametrize(("code", "plain"), [(1, True), (254, True), (0, False), (255, False)])
def test_scales_are_plain_only_without_code_0_or_255(code, plain):
    scales = torch.full((2, 3, 4), 120, dtype=torch.uint8)
    scales[1, 2, 3] = code
    assert mp.pack_scales(scales).plain is plain


def test_scales_are_cached_apart_from_codes_and_dropped_together():
    t = torch.randint(0, 128, (2, 8), dtype=torch.uint8)
    ps, pc = mp.packed_scales(t), mp.packed_codes(t)  # one tensor, two kinds: two entries
    assert mp.packed_scales(t) is ps and mp.packed_codes(t) is pc
    mp.drop_packed(t)
    assert mp.packed_scales(t) is not ps and mp.packed_codes(t) is not pc
