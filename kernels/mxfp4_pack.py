"""The MXFP4 codes and scales in the "packed" decode's layout (Mxfp4Config.decode == "packed",
kernels/_mxfp4_packed.py).

The reference layout (reference/qweights.py) stores e2m1 codes two per byte along K: per weight row, 32-bit
word j holds elements 8j .. 8j + 7, element 8j + i in nibble i (bits 4i .. 4i + 3). The packed decode reads
one 128-element step (four 32-blocks, 16 words) of a row at a time, and its tile is laid out so that the
compiler's natural layout for it is the MMA's operand layout: a thread must hold word c of every block b of
its column. So within each step the 4 x 4 words are stored word-major (each word as it is):

    packed step  [w(0,0) w(1,0) w(2,0) w(3,0)  w(0,1) ...  w(3,3)]    w(b, c) = word c of 32-block b
    reference    [w(0,0) w(0,1) w(0,2) w(0,3)  w(1,0) ...  w(3,3)]

(Reordering the nibbles inside each word so that a decoded register holds elements (2q, 2q + 1) instead of
(q, q + 4) spares the kernel its permutation of the activation tile, but the compiler then spends more
moves on the activation registers than the permutation's byte shuffles: 585 -> 651 SASS instructions per
gate_up K step on sm90, triton 3.9.)

The scales are padded too (code 127, 1.0; the padded codes are 0), to rows of a multiple of 16 codes, so
that the kernel reads a step's four E8M0 codes of a row without a mask as one aligned 32-bit load:

    field     dtype / shape              note
    codes     uint8 (..., N, K / 2)      reference layout, K a multiple of 32
    packed    uint8 (..., N, Kp / 2)     Kp = K rounded up to 128; the padding is code 0 (e2m1 +0)
    scales    uint8 (..., N, Ks)         reference order, Ks = K / 32 rounded up to 16; the padding is code 127

A layer call finds the packed copies in a cache keyed by the codes or scales tensor (weakly: a copy dies
with its tensor) and checked against the tensor's version counter, so an in-place change repacks. The codes'
copy costs their memory once more (half a byte per weight), the scales' a 32nd of a byte per weight;
`drop_packed` frees them. The first call packs outside any CUDA graph capture as every call compiles its
kernels there: the benchmarks and certify warm up before they capture.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

import torch

PACK_K = 128  # elements per packed step: the packed decode's BLOCK_K
WORDS = 4  # 32-bit words per 32-element block, and blocks per step
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


def pack_codes(codes: torch.Tensor) -> torch.Tensor:
    """codes (..., N, K/2) uint8 in the reference layout -> (..., N, Kp/2) uint8 in the packed layout
    (module docstring): zero-padded to whole steps, each step's 4 x 4 words transposed. Byte views only, so
    any device (meta included) and any storage offset."""
    *lead, n, kb = codes.shape
    kp = packed_k(2 * kb)
    c = torch.nn.functional.pad(codes, (0, kp // 2 - kb)) if kp != 2 * kb else codes
    steps = kp // PACK_K
    c = c.contiguous().view(*lead, n, steps, WORDS, WORDS, 4)  # (step, block b, word c, byte)
    return c.transpose(-3, -2).contiguous().view(*lead, n, steps * PACK_K // 2)


def unpack_codes(packed: torch.Tensor, k: int) -> torch.Tensor:
    """The inverse of pack_codes for rows of k elements (tests)."""
    *lead, n, kpb = packed.shape
    c = packed.contiguous().view(*lead, n, kpb * 2 // PACK_K, WORDS, WORDS, 4)
    return c.transpose(-3, -2).contiguous().view(*lead, n, kpb)[..., : k // 2]


def pack_scales(scales: torch.Tensor) -> torch.Tensor:
    """scales (..., N, K/32) uint8 E8M0 codes -> (..., N, Ks) uint8, contiguous: padded with code 127 to rows of
    a multiple of SCALE_ROW_ALIGN codes."""
    kb = scales.shape[-1]
    pad = -(-kb // SCALE_ROW_ALIGN) * SCALE_ROW_ALIGN - kb
    s = torch.nn.functional.pad(scales, (0, pad), value=127) if pad else scales
    return s.contiguous()


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


def packed_codes(codes: torch.Tensor) -> torch.Tensor:
    """The packed copy of `codes` (pack_codes), cached."""
    return _cached(codes, "codes", pack_codes)


def packed_scales(scales: torch.Tensor) -> torch.Tensor:
    """The packed copy of `scales` (pack_scales), cached."""
    return _cached(scales, "scales", pack_scales)


def drop_packed(t: torch.Tensor | None = None) -> None:
    """Forget the packed copies of `t` (codes or scales; all copies when None); the next call packs again."""
    if t is None:
        _CACHE.clear()
    else:
        for kind in ("codes", "scales"):
            _CACHE.pop((id(t), kind), None)
