"""The MXFP4 codes in the "packed" decode's layout (Mxfp4Config.decode == "packed", kernels/_mxfp4_packed.py).

The reference layout (reference/qweights.py) stores e2m1 codes two per byte along K: per weight row, 32-bit
word j holds elements 8j .. 8j + 7. The packed decode reads one 128-element step (four 32-blocks, 16 words)
of a row at a time, and its tile is laid out so that the compiler's natural layout for it is the MMA's
operand layout: a thread must hold word c of every block b of its column. So within each step the 4 x 4
words are stored word-major:

    packed step  [w(0,0) w(1,0) w(2,0) w(3,0)  w(0,1) ...  w(3,3)]    w(b, c) = word c of 32-block b
    reference    [w(0,0) w(0,1) w(0,2) w(0,3)  w(1,0) ...  w(3,3)]

    field     dtype / shape              note
    codes     uint8 (..., N, K / 2)      reference layout, K a multiple of 32
    packed    uint8 (..., N, Kp / 2)     Kp = K rounded up to 128; the padding is code 0 (e2m1 +0)

The scales are not repacked (the kernel reads them where they are). A layer call finds the packed copy in
a cache keyed by the codes tensor (weakly: the copy dies with the codes) and checked against the tensor's
version counter, so an in-place change of the codes repacks them. The copy costs the codes' memory once
more (half a byte per weight); `drop_packed` frees it. The first call packs outside any CUDA graph capture
as every call compiles its kernels there: the benchmarks and certify warm up before they capture.
"""

from __future__ import annotations

import weakref

import torch

PACK_K = 128  # elements per packed step: the packed decode's BLOCK_K
WORDS = 4  # 32-bit words per 32-element block, and blocks per step
# id(codes) -> (weak reference to codes, its version, packed copy). Keyed by identity: a WeakKeyDictionary
# compares live keys with ==, which a tensor answers elementwise. A finalizer drops the entry with the codes.
_CACHE: dict[int, tuple[weakref.ref, int, torch.Tensor]] = {}


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


def _version(t: torch.Tensor) -> int:
    try:
        return t._version
    # inference tensors keep no version counter (they cannot change outside inference mode)
    except RuntimeError:
        return -1


def packed_codes(codes: torch.Tensor) -> torch.Tensor:
    """The packed copy of `codes`, from the cache while the codes tensor is unchanged (module docstring)."""
    key, version = id(codes), _version(codes)
    hit = _CACHE.get(key)
    if hit is not None and hit[0]() is codes and hit[1] == version:
        return hit[2]
    packed = pack_codes(codes)
    # a tensor seen for the first time (or a dead one's reused id): its entry goes when it does
    if hit is None or hit[0]() is not codes:
        weakref.finalize(codes, _CACHE.pop, key, None)
    _CACHE[key] = (weakref.ref(codes), version, packed)
    return packed


def drop_packed(codes: torch.Tensor | None = None) -> None:
    """Forget the packed copy of `codes` (all copies when None); the next call packs again."""
    if codes is None:
        _CACHE.clear()
    else:
        _CACHE.pop(id(codes), None)
