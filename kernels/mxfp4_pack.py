"""The MXFP4 codes and scales in the packed decodes' layout (Mxfp4Config.decode == "packed",
kernels/_mxfp4_packed.py, and "swapped", kernels/_mxfp4_swapped.py).

The reference layout (reference/qweights.py) stores e2m1 codes two per byte along K: per weight row, 32-bit
word j holds elements 8j .. 8j + 7, element 8j + i in nibble i (bits 4i .. 4i + 3). The packed decode reads
one 128-element step (four 32-blocks, 16 words) of a row at a time, and its tile is laid out so that the
compiler's natural layout for it is the MMA's operand layout: a thread must hold word c of every block b of
its column. So within each step the 4 x 4 words are stored word-major:

    packed step  [w(0,0) w(1,0) w(2,0) w(3,0)  w(0,1) ...  w(3,3)]    w(b, c) = word c of 32-block b
    reference    [w(0,0) w(0,1) w(0,2) w(0,3)  w(1,0) ...  w(3,3)]

Which eight elements of its block word (b, c) holds depends on the MMA operand the decode feeds (the `order`
of pack_codes, PACK_ORDERS); word element e = q + 4p is decoded into half p of register q:

    order    word (b, c) element q + 4p          the decode                 a thread's MMA register q holds
    mma_b    block element 8c + q + 4p           packed (weights as B)      elements (8c + q, 8c + q + 4): the
                                                                            activation's K order is permuted
    mma_a    block element 8q + 2c + p           swapped (weights as A)     elements (8q + 2c, 8q + 2c + 1):
                                                                            wgmma's A layout, K order as is

and inside each word the eight codes move to the bits where the decode needs the fewest integer operations
(NIBBLE_PLACES). The decode builds register q from elements q (low half) and q + 4 (high half): the code's
magnitude bits (m, e0, e1) must land on bf16 bits 6-8 (22-24) and its sign on bit 15 (31). A code whose sign
sits 9 bits above its magnitude gets there with one shift and one mask. Two of the four registers are placed
so (q = 0, 1); the other two take a second shift for the sign, and q = 3 a right shift:

    q   magnitude bits (low / high half)   sign bit     decode (_mxfp4_packed._pair_bits)
    0   0-2 / 16-18                        9 / 25       (B << 6) & 0x81C081C0
    1   3-5 / 19-21                        12 / 28      (B << 3) & 0x81C081C0
    2   6-8 / 22-24                        10 / 26      (B & 0x01C001C0) | ((B << 5) & 0x80008000)
    3   13-15 / 29-31                      11 / 27      ((B >> 7) & 0x01C001C0) | ((B << 4) & 0x80008000)

The reference order's bits take 10 integer operations per word in the ALU pipe (8 masks, 2 right shifts) and
5 shifts in the FMA pipe; these take 7 and 4. sm90 issues ALU instructions at half rate, and the decode-size
K loop was about half ALU work (docs/mxfp4.md, session 24). Register q still holds elements q and q + 4: with
(2q, 2q + 1) instead the activation tile would need no permutation, but the compiler then moves its
registers with more instructions than the permutation's byte shuffles (541 against 488 per gate_up step).

The scales are padded too (code 127, 1.0; the padded codes are 0), to rows of a multiple of 16 codes, so
that the kernel reads a step's four E8M0 codes of a row without a mask as one aligned 32-bit load:

    field     dtype / shape              note
    codes     uint8 (..., N, K / 2)      reference layout, K a multiple of 32
    packed    uint8 (..., N, Kp / 2)     Kp = K rounded up to 128; the padding is code 0 (e2m1 +0)
              uint8 (..., Ng, G Kp / 2)  with a row group G > 1 (Mxfp4Config.row_group): tile-major, pack_codes
    scales    uint8 (..., N, Ks)         reference order, Ks = K / 32 rounded up to 16; the padding is code 127
    plain     bool                       every code in [1, 254]: no subnormal scale (code 0) and no NaN (255),
                                         so the decode builds 2^(s - 127) as s << 7 (no selects); the kernel
                                         is chosen by it, and both give the same bits

A layer call finds the packed copies in a cache keyed by the codes or scales tensor (weakly: a copy dies
with its tensor) and checked against the tensor's version counter, so an in-place change repacks. The codes'
copy costs their memory once more (half a byte per weight), the scales' a 32nd of a byte per weight;
`drop_packed` frees them. The first call packs outside any CUDA graph capture as every call compiles its
kernels there (and `plain` reads one bool back): the benchmarks and certify warm up before they capture.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

PACK_K = 128  # elements per packed step: the packed decode's BLOCK_K
WORDS = 4  # 32-bit words per 32-element block, and blocks per step
#: per decoded register q: (first bit of the low element's magnitude, bit of its sign); the high element
#: (q + 4) sits 16 bits higher (module docstring)
NIBBLE_PLACES = ((0, 9), (3, 12), (6, 10), (13, 11))
#: which 8 elements of its 32-block word (b, c) holds (module docstring): "mma_b" for the packed decode (the
#: weights as the MMA's second operand), "mma_a" for the swapped decode (as its first operand)
PACK_ORDERS = ("mma_b", "mma_a")
#: scale codes per packed row are a multiple of this: every row starts 16-byte aligned, so Triton can prove that
#: a step's four codes (4-aligned, as 16 is a multiple of a step's 4) are one 32-bit load
SCALE_ROW_ALIGN = 16
# (id(tensor), kind) -> (weak reference to the tensor, its version, packed copy). Keyed by identity: a
# WeakKeyDictionary compares live keys with ==, which a tensor answers elementwise. A finalizer drops the
# entry with the tensor.
_CACHE: dict[tuple[int, str], tuple[weakref.ref, int, Any]] = {}


def packed_k(k: int) -> int:
    """Elements per packed row: k rounded up to whole 128-element steps."""
    return -(-k // PACK_K) * PACK_K


def _place_nibbles(words: torch.Tensor) -> torch.Tensor:
    """int32 words holding 8 codes in reference order (element i in bits 4i .. 4i + 3) -> the same 8 codes at
    NIBBLE_PLACES."""
    out = torch.zeros_like(words)
    for q, (mag, sign) in enumerate(NIBBLE_PLACES):
        for half in range(2):
            nib = (words >> (4 * (q + 4 * half))) & 0xF
            out |= (nib & 7) << (mag + 16 * half)
            out |= (nib >> 3) << (sign + 16 * half)
    return out


def _unplace_nibbles(words: torch.Tensor) -> torch.Tensor:
    """The inverse of _place_nibbles."""
    out = torch.zeros_like(words)
    for q, (mag, sign) in enumerate(NIBBLE_PLACES):
        for half in range(2):
            nib = ((words >> (mag + 16 * half)) & 7) | (((words >> (sign + 16 * half)) & 1) << 3)
            out |= nib << (4 * (q + 4 * half))
    return out


def _bytes_to_words(b: torch.Tensor) -> torch.Tensor:
    """(..., 4) uint8 -> (...) int32 little-endian words (arithmetic, not a view: meta tensors and any
    storage offset)."""
    b = b.to(torch.int32)  # shifts into bit 31 wrap; every read masks after its shift
    return b[..., 0] | (b[..., 1] << 8) | (b[..., 2] << 16) | (b[..., 3] << 24)


def _words_to_bytes(w: torch.Tensor) -> torch.Tensor:
    return torch.stack([(w >> (8 * i)) & 0xFF for i in range(4)], dim=-1).to(torch.uint8)


def _a_words(words: torch.Tensor, inverse: bool = False) -> torch.Tensor:
    """(..., 4) int32 words of one 32-block in reference order (word q: elements 8q .. 8q + 7, element 8q + n in
    nibble n) -> the "mma_a" order (word c, element q + 4p = block element 8q + 2c + p: nibble 2c + p of
    reference word q), or back (inverse). Word-wide shifts and masks: no tensor of one code per element."""
    out = [torch.zeros_like(words[..., 0]) for _ in range(WORDS)]
    for c in range(WORDS):
        for q in range(4):
            for p in range(2):
                a, r = (
                    4 * (q + 4 * p),
                    4 * (2 * c + p),
                )  # the code's nibble in mma_a word c / reference word q
                if inverse:
                    out[q] |= ((words[..., c] >> a) & 0xF) << r
                else:
                    out[c] |= ((words[..., q] >> r) & 0xF) << a
    return torch.stack(out, dim=-1)


def pack_codes(codes: torch.Tensor, order: str = "mma_b", group: int = 1) -> torch.Tensor:
    """codes (..., N, K/2) uint8 in the reference layout -> (..., N, Kp/2) uint8 in the packed layout
    (module docstring): zero-padded to whole steps, each word's codes chosen by `order` (PACK_ORDERS), each
    step's 4 x 4 words word-major, each word's codes at NIBBLE_PLACES. Any device (meta included) and any
    storage offset.

    group > 1 (the packed decodes' Mxfp4Config.row_group) stores the rows tile-major: (..., Ng, Kp/2 * group)
    with Ng = ceil(N / group), zero rows padding the last group, and group g's bytes step by step, each step the
    group's rows one after another (64 bytes each). A program's rows of one K step are then one contiguous run
    (group x 64 bytes) instead of 64 bytes in each of group rows:

        row-major (group 1)   [r0 s0][r0 s1] ... [r1 s0][r1 s1] ...
        tile-major            [r0 s0][r1 s0] ... [r63 s0][r0 s1][r1 s1] ...   (group 64)"""
    if order not in PACK_ORDERS:
        raise ValueError(f"order: expected one of {PACK_ORDERS}, got {order!r}")
    if group < 1 or group & (group - 1):
        raise ValueError(f"group: expected a power of two >= 1, got {group!r}")
    *lead, n, kb = codes.shape
    kp = packed_k(2 * kb)
    c = torch.nn.functional.pad(codes, (0, kp // 2 - kb)) if kp != 2 * kb else codes
    steps = kp // PACK_K
    w = _bytes_to_words(c.reshape(*lead, n, steps, WORDS, WORDS, 4))  # (step, block b, word)
    if order == "mma_a":
        w = _a_words(w)
    w = _place_nibbles(w.transpose(-2, -1))  # (step, word c, block b)
    return tile_major(_words_to_bytes(w).reshape(*lead, n, steps, PACK_K // 2), group)


def tile_major(rows: torch.Tensor, group: int) -> torch.Tensor:
    """(..., N, steps, run) -> (..., ceil(N / group), steps * group * run), contiguous: per group of rows, step by
    step, the group's runs one after another; zero rows pad the last group (code +0). group 1: the rows as they
    are, (..., N, steps * run)."""
    *lead, n, steps, run = rows.shape
    if group > 1:
        ng = -(-n // group)
        rows = torch.nn.functional.pad(rows, (0, 0, 0, 0, 0, ng * group - n))
        rows = rows.reshape(*lead, ng, group, steps, run).transpose(-3, -2)  # (group, step, row)
        n = ng
    return rows.contiguous().reshape(*lead, n, steps * group * run)


def unpack_codes(
    packed: torch.Tensor, k: int, order: str = "mma_b", group: int = 1, rows: int | None = None
) -> torch.Tensor:
    """The inverse of pack_codes for rows of k elements (tests); `rows` drops a tile-major copy's padding."""
    if group > 1:
        *lead, ng, gb = packed.shape
        steps = gb // (group * PACK_K // 2)
        packed = packed.reshape(*lead, ng, steps, group, PACK_K // 2).transpose(-3, -2)
        packed = packed.reshape(*lead, ng * group, steps * PACK_K // 2)[
            ..., : rows if rows is not None else ng * group, :
        ]
    *lead, n, kpb = packed.shape
    w = _unplace_nibbles(_bytes_to_words(packed.reshape(*lead, n, kpb * 2 // PACK_K, WORDS, WORDS, 4)))
    w = w.transpose(-2, -1)  # (step, block b, word)
    if order == "mma_a":
        w = _a_words(w, inverse=True)
    return _words_to_bytes(w).reshape(*lead, n, kpb)[..., : k // 2]


@dataclass(frozen=True)
class PackedScales:
    """The E8M0 scales as the packed decode reads them (module docstring)."""

    scales: torch.Tensor  # uint8 (..., N, Ks): reference order, padded with code 127 to SCALE_ROW_ALIGN codes
    plain: bool  # every code in [1, 254]: the decode's select-free scale is exact


def pack_scales(scales: torch.Tensor) -> PackedScales:
    """scales (..., N, K/32) uint8 E8M0 codes -> PackedScales: padded with code 127 to rows of a multiple of
    SCALE_ROW_ALIGN codes, contiguous, and whether every code is plain (meta tensors: assumed, so the AOT
    matrix compiles the kernel real checkpoints run)."""
    kb = scales.shape[-1]
    pad = -(-kb // SCALE_ROW_ALIGN) * SCALE_ROW_ALIGN - kb
    s = torch.nn.functional.pad(scales, (0, pad), value=127) if pad else scales
    plain = True if scales.is_meta else bool(((scales >= 1) & (scales <= 254)).all())
    return PackedScales(s.contiguous(), plain)


def _version(t: torch.Tensor) -> int:
    try:
        return t._version
    # inference tensors keep no version counter (they cannot change outside inference mode)
    except RuntimeError:
        return -1


def _cached(t: torch.Tensor, kind: str, make: Callable[[torch.Tensor], Any]) -> Any:
    """make(t), from the cache while t is unchanged (module docstring)."""
    key, version = (id(t), kind), _version(t)
    hit = _CACHE.get(key)
    if hit is not None and hit[0]() is t and hit[1] == version:
        return hit[2]
    value = make(t)
    # a tensor seen for the first time (or a dead one's reused id): its entry goes when it does
    if hit is None or hit[0]() is not t:
        weakref.finalize(t, _CACHE.pop, key, None)
    _CACHE[key] = (weakref.ref(t), version, value)
    return value


def packed_codes(codes: torch.Tensor, order: str = "mma_b", group: int = 1) -> torch.Tensor:
    """The packed copy of `codes` (pack_codes) in `order` and row `group`, cached."""
    return _cached(codes, f"codes:{order}:{group}", lambda t: pack_codes(t, order, group))


def packed_scales(scales: torch.Tensor) -> PackedScales:
    """The packed copy of `scales` (pack_scales), cached."""
    return _cached(scales, "scales", pack_scales)


def drop_packed(t: torch.Tensor | None = None) -> None:
    """Forget the packed copies of `t` (codes or scales; all copies when None); the next call packs again."""
    if t is None:
        _CACHE.clear()
    else:
        for key in [key for key in _CACHE if key[0] == id(t)]:
            _CACHE.pop(key, None)
