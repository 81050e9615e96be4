"""Low-precision number formats, bit-exact in float64: fp8 e4m3fn / e4m3fnuz / e5m2, fp4 e2m1, E8M0 scales.

    name       bits  bias  max finite  inf   NaN codes             zeros
    e4m3fn     8     7     448         no    0x7F, 0xFF            +0 0x00, -0 0x80
    e4m3fnuz   8     8     240         no    0x80                  one zero 0x00
    e5m2       8     15    57344       yes   0x7D-0x7F, 0xFD-0xFF  +0 0x00, -0 0x80 (inf 0x7C, 0xFC)
    e2m1       4     1     6           no    none                  +0 0x0, -0 0x8
    e8m0       8     127   2^127       no    0xFF                  none (unsigned scale: x = 2^(code - 127))

    codes  = encode(fmt, x)       # uint8 array, x any float64 array: RTNE, saturating at +-max
    values = decode(fmt, codes)   # float64 array, every code (NaN encodings decode to NaN)

Encoding policy (the OCP "satfinite" conversion): finite values round to nearest, ties to the even code;
magnitudes above the largest finite value (and +-inf) become +-max; NaN becomes the format's NaN (0x7F for
e4m3fn, 0x80 for e4m3fnuz, 0x7E for e5m2). e2m1 has no NaN: encoding NaN raises SpecError. A negative
value that rounds to zero keeps its sign where the format has -0 (e4m3fnuz has none: it becomes 0x00).

E8M0 is a scale, not an element format: `e8m0_encode` takes exact powers of two, and `ue8m0_scale` turns a
group's amax into a power-of-two scale by one of the producers' rounding modes (SCALE_ROUNDINGS).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from moe_cts.reference.errors import SpecError


@dataclass(frozen=True)
class Format:
    """A sign-exponent-mantissa format. Finite values: (-1)^s * 2^(E - bias) * (1 + M / 2^mbits) for E > 0,
    (-1)^s * 2^(1 - bias) * (M / 2^mbits) for E = 0 (subnormals)."""

    name: str
    ebits: int  # exponent field width
    mbits: int  # mantissa field width
    bias: int  # exponent bias
    max: float  # largest finite magnitude (the saturation value)
    nan: int | None  # the code that encode() writes for NaN (None: the format has no NaN)
    neg_zero: bool  # 0b1000... is -0 (True) or NaN / absent (False)

    @property
    def bits(self) -> int:
        return 1 + self.ebits + self.mbits

    @property
    def emin(self) -> int:
        """Exponent of the smallest normal number."""
        return 1 - self.bias

    @property
    def emax(self) -> int:
        """Exponent of the largest power of two the format holds: floor(log2(max))."""
        return int(np.frexp(self.max)[1]) - 1


E4M3FN = Format("e4m3fn", 4, 3, 7, 448.0, 0x7F, True)
E4M3FNUZ = Format("e4m3fnuz", 4, 3, 8, 240.0, 0x80, False)
E5M2 = Format("e5m2", 5, 2, 15, 57344.0, 0x7E, True)
E2M1 = Format("e2m1", 2, 1, 1, 6.0, None, True)

FORMATS = {f.name: f for f in (E4M3FN, E4M3FNUZ, E5M2, E2M1)}
FP8_FORMATS = ("e4m3fn", "e4m3fnuz", "e5m2")

#: E8M0 scale rounding modes (amax -> 2^e), see ue8m0_scale
SCALE_ROUNDINGS = ("ceil", "floor", "threshold_1p75")


def get(fmt: str | Format) -> Format:
    if isinstance(fmt, Format):
        return fmt
    if fmt not in FORMATS:
        raise SpecError("format", f"one of {sorted(FORMATS)}", fmt)
    return FORMATS[fmt]


# ----------------------------------------------------------------------------------------------- decode
def _code_values(f: Format) -> np.ndarray:
    """float64 value of every code 0 .. 2^bits - 1, from the bit fields (ef exponent, mf mantissa)."""
    codes = np.arange(1 << f.bits)
    sign = np.where(codes >> (f.bits - 1), -1.0, 1.0)
    ef = (codes >> f.mbits) & ((1 << f.ebits) - 1)
    mf = codes & ((1 << f.mbits) - 1)
    frac = mf / float(1 << f.mbits)
    mag = np.where(ef == 0, np.ldexp(frac, f.emin), np.ldexp(1.0 + frac, ef - f.bias))
    vals = sign * mag
    top = (1 << f.ebits) - 1
    if f.name == "e4m3fn":  # S.1111.111 is NaN; S.1111.000-110 are finite
        vals[(ef == top) & (mf == (1 << f.mbits) - 1)] = np.nan
    elif f.name == "e5m2":  # IEEE-like: ef all ones is inf (mf = 0) or NaN
        vals[(ef == top) & (mf == 0)] = sign[(ef == top) & (mf == 0)] * np.inf
        vals[(ef == top) & (mf != 0)] = np.nan
    elif f.name == "e4m3fnuz":  # the -0 pattern is the only NaN
        vals[1 << (f.bits - 1)] = np.nan
    return vals


_TABLES = {name: _code_values(f) for name, f in FORMATS.items()}


def decode(fmt: str | Format, codes) -> np.ndarray:
    """float64 values of integer codes (any shape); each code must be in [0, 2^bits)."""
    f = get(fmt)
    c = np.asarray(codes)
    if c.size and (c.min() < 0 or c.max() >= 1 << f.bits):
        raise SpecError("codes", f"integers in [0, {1 << f.bits}) for {f.name}", (int(c.min()), int(c.max())))
    return _TABLES[f.name][c.astype(np.int64)]


# ----------------------------------------------------------------------------------------------- encode
def round_to(fmt: str | Format, x) -> np.ndarray:
    """x rounded to the format's values in float64: RTNE, saturated at +-max, NaN stays NaN.

    For |x| below max: quantum = 2^(max(floor(log2|x|), emin) - mbits); |x| / quantum is exact (a power
    of two scaling), np.rint rounds it half to even, which is exactly RTNE on the significand."""
    f = get(fmt)
    x = np.asarray(x, dtype=np.float64)
    a = np.abs(x)
    with np.errstate(invalid="ignore"):
        big = a >= f.max  # includes +inf; NaN compares False
        _, e2 = np.frexp(np.where(np.isfinite(a), a, 1.0))  # a = m * 2^e2, m in [0.5, 1)
        exp = np.maximum(e2 - 1, f.emin)
        quantum = np.ldexp(1.0, exp - f.mbits)
        r = np.rint(np.where(np.isfinite(a), a, 0.0) / quantum) * quantum
        r = np.minimum(r, f.max)  # a tie just below max may round up past it: saturate
        r = np.where(big, f.max, r)
        out = np.copysign(r, x)
    return np.where(np.isnan(x), np.nan, out)


def _value_code(f: Format, v: np.ndarray) -> np.ndarray:
    """Codes of values that are exactly representable (finite, |v| <= max)."""
    a = np.abs(v)
    _, e2 = np.frexp(np.where(a > 0, a, 1.0))
    normal = a >= np.ldexp(1.0, f.emin)
    E = np.where(normal, e2 - 1 + f.bias, 0)
    sig = np.where(normal, np.ldexp(a, -(e2 - 1) + f.mbits) - (1 << f.mbits), np.ldexp(a, -f.emin + f.mbits))
    code = (E << f.mbits) + sig.astype(np.int64)
    neg = np.signbit(v) & (f.neg_zero | (a > 0))
    return code + np.where(neg, 1 << (f.bits - 1), 0)


#: elements per piece of encode: its ~12 float64 temporaries stay in the cache instead of a fresh
#: multi-GB array each (the quantized DeepSeek-V3-width case encodes 0.7 G weights; issue 15)
ENCODE_CHUNK = 1 << 16


def encode(fmt: str | Format, x) -> np.ndarray:
    """uint8 codes of x (any shape): RTNE with saturation (module docstring). e2m1: one code per byte,
    in the low nibble (pack_e2m1 packs two per byte). Element by element, in pieces of ENCODE_CHUNK."""
    f = get(fmt)
    x = np.asarray(x, dtype=np.float64)
    if x.size <= ENCODE_CHUNK:
        return _encode(f, x)
    flat = x.reshape(-1)
    out = np.empty(flat.shape, np.uint8)
    for i in range(0, flat.size, ENCODE_CHUNK):
        out[i : i + ENCODE_CHUNK] = _encode(f, flat[i : i + ENCODE_CHUNK])
    return out.reshape(x.shape)


def _encode(f: Format, x: np.ndarray) -> np.ndarray:
    nan = np.isnan(x)
    if nan.any() and f.nan is None:
        raise SpecError("x", f"no NaN ({f.name} has no NaN encoding)", "NaN")
    r = round_to(f, x)
    code = _value_code(f, np.where(nan, 0.0, r))
    return np.where(nan, f.nan if f.nan is not None else 0, code).astype(np.uint8)


def pack_e2m1(codes) -> np.ndarray:
    """(..., K) 4-bit codes -> (..., K/2) bytes, element 2i in the low nibble, 2i+1 in the high one."""
    c = np.asarray(codes, dtype=np.uint8)
    if c.shape[-1] % 2:
        raise SpecError("codes.shape", "an even last dimension (two e2m1 codes per byte)", c.shape)
    return (c[..., 0::2] & 0xF) | ((c[..., 1::2] & 0xF) << 4)


def unpack_e2m1(packed) -> np.ndarray:
    """(..., K/2) bytes -> (..., K) 4-bit codes (low nibble first)."""
    p = np.asarray(packed, dtype=np.uint8)
    out = np.empty((*p.shape[:-1], 2 * p.shape[-1]), np.uint8)
    out[..., 0::2], out[..., 1::2] = p & 0xF, p >> 4
    return out


# ----------------------------------------------------------------------------------------------- E8M0
def e8m0_decode(codes) -> np.ndarray:
    """2^(code - 127) as float64; 0xFF is NaN. Code 0 is 2^-127 (a float64 normal number)."""
    c = np.asarray(codes).astype(np.int64)
    return np.where(c == 0xFF, np.nan, np.ldexp(1.0, c - 127))


def e8m0_encode(scale) -> np.ndarray:
    """uint8 code of a power-of-two scale in [2^-127, 2^127]; NaN -> 0xFF. Anything else raises."""
    s = np.asarray(scale, dtype=np.float64)
    nan = np.isnan(s)
    m, e2 = np.frexp(np.where(nan, 1.0, s))
    ok = (m == 0.5) & (e2 - 1 >= -127) & (e2 - 1 <= 127)
    if not ok.all():
        raise SpecError("scale", "powers of two in [2^-127, 2^127] (E8M0)", s[~ok].ravel()[:4].tolist())
    return np.where(nan, 0xFF, e2 - 1 + 127).astype(np.uint8)


def ue8m0_scale(amax, elem: str | Format, rounding: str) -> np.ndarray:
    """Power-of-two scale 2^e for groups of largest magnitude `amax` (> 0) and element format `elem`.

        rounding="ceil"            e = ceil(log2(amax / elem.max))          never clips (DeepSeek UE8M0,
                                                                            triton_kernels, FlashInfer)
        rounding="floor"           e = floor(log2(amax)) - elem.emax        OCP MX spec 6.3; may clip
        rounding="threshold_1p75"  e = floor(log2(amax)) + [amax >= 1.75 * 2^floor(log2 amax)] - elem.emax
                                                                            (vLLM CUTLASS MXFP4, PR 43557)

    Exact: floor(log2) comes from frexp, and ceil is checked by comparing 2^e * max with amax (both exact).
    NaN amax gives NaN, amax = 0 gives 0 (callers apply the epsilon policy first); e is clamped to E8M0's range [-127, 127]."""
    f = get(elem)
    if rounding not in SCALE_ROUNDINGS:
        raise SpecError("scale_rounding", f"one of {SCALE_ROUNDINGS}", rounding)
    a = np.asarray(amax, dtype=np.float64)
    nan = np.isnan(a)
    safe = np.where(nan | (a <= 0) | ~np.isfinite(a), 1.0, a)
    m, e2 = np.frexp(safe)  # safe = m * 2^e2, m in [0.5, 1): floor(log2) = e2 - 1
    fl = e2 - 1
    if rounding == "floor":
        e = fl - f.emax
    elif rounding == "threshold_1p75":
        e = fl + (m >= 0.875) - f.emax
    else:
        _, e_max = np.frexp(f.max)
        e = e2 - e_max  # first guess for ceil(log2(amax / max)), then correct it exactly
        e = np.where(np.ldexp(f.max, e - 1) >= safe, e - 1, e)
        e = np.where(np.ldexp(f.max, e) < safe, e + 1, e)
    e = np.clip(e, -127, 127)
    out = np.where(a == 0, 0.0, np.ldexp(1.0, e))  # 2^ceil(log2 0) = 0: the no-epsilon 0/0 path
    return np.where(nan, np.nan, out)
