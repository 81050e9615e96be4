"""The format codecs against tables written out from the format definitions (OCP 8-bit FP and MX specs):
every code decodes to its listed value, every finite value encodes back to its code, rounding is to
nearest-even with saturation, and NaN / inf / -0 follow each format's rules.

The tables below are literal: one row per exponent field, one entry per mantissa field, positive half
(sign bit 0). The negative half (sign bit 1) is the same magnitudes negated, except the codes listed in
each format's special-case test."""

from __future__ import annotations

import math

import numpy as np
import pytest

from moe_cts.reference import formats
from moe_cts.reference.errors import SpecError

NAN, INF = math.nan, math.inf

# One row per exponent field, as the format definitions read: kept out of the formatter.
# fmt: off
E4M3FN_POS = [
    # 0x00: subnormals, M/8 * 2^-6
    0.0, 0.001953125, 0.00390625, 0.005859375, 0.0078125, 0.009765625, 0.01171875, 0.013671875,
    # 0x08: 2^-6 * (1 + M/8)
    0.015625, 0.017578125, 0.01953125, 0.021484375, 0.0234375, 0.025390625, 0.02734375, 0.029296875,
    # 0x10: 2^-5 * (1 + M/8)
    0.03125, 0.03515625, 0.0390625, 0.04296875, 0.046875, 0.05078125, 0.0546875, 0.05859375,
    # 0x18: 2^-4 * (1 + M/8)
    0.0625, 0.0703125, 0.078125, 0.0859375, 0.09375, 0.1015625, 0.109375, 0.1171875,
    # 0x20: 2^-3 * (1 + M/8)
    0.125, 0.140625, 0.15625, 0.171875, 0.1875, 0.203125, 0.21875, 0.234375,
    # 0x28: 2^-2 * (1 + M/8)
    0.25, 0.28125, 0.3125, 0.34375, 0.375, 0.40625, 0.4375, 0.46875,
    # 0x30: 2^-1 * (1 + M/8)
    0.5, 0.5625, 0.625, 0.6875, 0.75, 0.8125, 0.875, 0.9375,
    # 0x38: 2^0 * (1 + M/8)
    1.0, 1.125, 1.25, 1.375, 1.5, 1.625, 1.75, 1.875,
    # 0x40: 2^1 * (1 + M/8)
    2.0, 2.25, 2.5, 2.75, 3.0, 3.25, 3.5, 3.75,
    # 0x48: 2^2 * (1 + M/8)
    4.0, 4.5, 5.0, 5.5, 6.0, 6.5, 7.0, 7.5,
    # 0x50: 2^3 * (1 + M/8)
    8.0, 9.0, 10.0, 11.0, 12.0, 13.0, 14.0, 15.0,
    # 0x58: 2^4 * (1 + M/8)
    16.0, 18.0, 20.0, 22.0, 24.0, 26.0, 28.0, 30.0,
    # 0x60: 2^5 * (1 + M/8)
    32.0, 36.0, 40.0, 44.0, 48.0, 52.0, 56.0, 60.0,
    # 0x68: 2^6 * (1 + M/8)
    64.0, 72.0, 80.0, 88.0, 96.0, 104.0, 112.0, 120.0,
    # 0x70: 2^7 * (1 + M/8)
    128.0, 144.0, 160.0, 176.0, 192.0, 208.0, 224.0, 240.0,
    # 0x78: 2^8 * (1 + M/8)
    256.0, 288.0, 320.0, 352.0, 384.0, 416.0, 448.0, NAN,
]

E4M3FNUZ_POS = [
    # 0x00: subnormals, M/8 * 2^-7
    0.0, 0.0009765625, 0.001953125, 0.0029296875, 0.00390625, 0.0048828125, 0.005859375, 0.0068359375,
    # 0x08: 2^-7 * (1 + M/8)
    0.0078125, 0.0087890625, 0.009765625, 0.0107421875, 0.01171875, 0.0126953125, 0.013671875, 0.0146484375,
    # 0x10: 2^-6 * (1 + M/8)
    0.015625, 0.017578125, 0.01953125, 0.021484375, 0.0234375, 0.025390625, 0.02734375, 0.029296875,
    # 0x18: 2^-5 * (1 + M/8)
    0.03125, 0.03515625, 0.0390625, 0.04296875, 0.046875, 0.05078125, 0.0546875, 0.05859375,
    # 0x20: 2^-4 * (1 + M/8)
    0.0625, 0.0703125, 0.078125, 0.0859375, 0.09375, 0.1015625, 0.109375, 0.1171875,
    # 0x28: 2^-3 * (1 + M/8)
    0.125, 0.140625, 0.15625, 0.171875, 0.1875, 0.203125, 0.21875, 0.234375,
    # 0x30: 2^-2 * (1 + M/8)
    0.25, 0.28125, 0.3125, 0.34375, 0.375, 0.40625, 0.4375, 0.46875,
    # 0x38: 2^-1 * (1 + M/8)
    0.5, 0.5625, 0.625, 0.6875, 0.75, 0.8125, 0.875, 0.9375,
    # 0x40: 2^0 * (1 + M/8)
    1.0, 1.125, 1.25, 1.375, 1.5, 1.625, 1.75, 1.875,
    # 0x48: 2^1 * (1 + M/8)
    2.0, 2.25, 2.5, 2.75, 3.0, 3.25, 3.5, 3.75,
    # 0x50: 2^2 * (1 + M/8)
    4.0, 4.5, 5.0, 5.5, 6.0, 6.5, 7.0, 7.5,
    # 0x58: 2^3 * (1 + M/8)
    8.0, 9.0, 10.0, 11.0, 12.0, 13.0, 14.0, 15.0,
    # 0x60: 2^4 * (1 + M/8)
    16.0, 18.0, 20.0, 22.0, 24.0, 26.0, 28.0, 30.0,
    # 0x68: 2^5 * (1 + M/8)
    32.0, 36.0, 40.0, 44.0, 48.0, 52.0, 56.0, 60.0,
    # 0x70: 2^6 * (1 + M/8)
    64.0, 72.0, 80.0, 88.0, 96.0, 104.0, 112.0, 120.0,
    # 0x78: 2^7 * (1 + M/8)
    128.0, 144.0, 160.0, 176.0, 192.0, 208.0, 224.0, 240.0,
]

E5M2_POS = [
    # 0x00: subnormals, M/4 * 2^-14
    0.0, 1.52587890625e-05, 3.0517578125e-05, 4.57763671875e-05,
    # 0x04: 2^-14 * (1 + M/4)
    6.103515625e-05, 7.62939453125e-05, 9.1552734375e-05, 0.0001068115234375,
    # 0x08: 2^-13 * (1 + M/4)
    0.0001220703125, 0.000152587890625, 0.00018310546875, 0.000213623046875,
    # 0x0C: 2^-12 * (1 + M/4)
    0.000244140625, 0.00030517578125, 0.0003662109375, 0.00042724609375,
    # 0x10: 2^-11 * (1 + M/4)
    0.00048828125, 0.0006103515625, 0.000732421875, 0.0008544921875,
    # 0x14: 2^-10 * (1 + M/4)
    0.0009765625, 0.001220703125, 0.00146484375, 0.001708984375,
    # 0x18: 2^-9 * (1 + M/4)
    0.001953125, 0.00244140625, 0.0029296875, 0.00341796875,
    # 0x1C: 2^-8 * (1 + M/4)
    0.00390625, 0.0048828125, 0.005859375, 0.0068359375,
    # 0x20: 2^-7 * (1 + M/4)
    0.0078125, 0.009765625, 0.01171875, 0.013671875,
    # 0x24: 2^-6 * (1 + M/4)
    0.015625, 0.01953125, 0.0234375, 0.02734375,
    # 0x28: 2^-5 * (1 + M/4)
    0.03125, 0.0390625, 0.046875, 0.0546875,
    # 0x2C: 2^-4 * (1 + M/4)
    0.0625, 0.078125, 0.09375, 0.109375,
    # 0x30: 2^-3 * (1 + M/4)
    0.125, 0.15625, 0.1875, 0.21875,
    # 0x34: 2^-2 * (1 + M/4)
    0.25, 0.3125, 0.375, 0.4375,
    # 0x38: 2^-1 * (1 + M/4)
    0.5, 0.625, 0.75, 0.875,
    # 0x3C: 2^0 * (1 + M/4)
    1.0, 1.25, 1.5, 1.75,
    # 0x40: 2^1 * (1 + M/4)
    2.0, 2.5, 3.0, 3.5,
    # 0x44: 2^2 * (1 + M/4)
    4.0, 5.0, 6.0, 7.0,
    # 0x48: 2^3 * (1 + M/4)
    8.0, 10.0, 12.0, 14.0,
    # 0x4C: 2^4 * (1 + M/4)
    16.0, 20.0, 24.0, 28.0,
    # 0x50: 2^5 * (1 + M/4)
    32.0, 40.0, 48.0, 56.0,
    # 0x54: 2^6 * (1 + M/4)
    64.0, 80.0, 96.0, 112.0,
    # 0x58: 2^7 * (1 + M/4)
    128.0, 160.0, 192.0, 224.0,
    # 0x5C: 2^8 * (1 + M/4)
    256.0, 320.0, 384.0, 448.0,
    # 0x60: 2^9 * (1 + M/4)
    512.0, 640.0, 768.0, 896.0,
    # 0x64: 2^10 * (1 + M/4)
    1024.0, 1280.0, 1536.0, 1792.0,
    # 0x68: 2^11 * (1 + M/4)
    2048.0, 2560.0, 3072.0, 3584.0,
    # 0x6C: 2^12 * (1 + M/4)
    4096.0, 5120.0, 6144.0, 7168.0,
    # 0x70: 2^13 * (1 + M/4)
    8192.0, 10240.0, 12288.0, 14336.0,
    # 0x74: 2^14 * (1 + M/4)
    16384.0, 20480.0, 24576.0, 28672.0,
    # 0x78: 2^15 * (1 + M/4)
    32768.0, 40960.0, 49152.0, 57344.0,
    # 0x7C: 2^16 * (1 + M/4)
    INF, NAN, NAN, NAN,
]
# fmt: on

E2M1_ALL = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0]


def full_table(pos: list[float], neg_special: dict[int, float]) -> np.ndarray:
    """256 values: the positive half, then its negation with the format's sign-specific codes replaced."""
    neg = [-v for v in pos]
    for code, v in neg_special.items():
        neg[code - 0x80] = v
    return np.array(pos + neg)


TABLES = {
    "e4m3fn": full_table(E4M3FN_POS, {0x80: -0.0, 0xFF: NAN}),
    "e4m3fnuz": full_table(E4M3FNUZ_POS, {0x80: NAN}),
    "e5m2": full_table(E5M2_POS, {0x80: -0.0, 0xFC: -INF}),
    "e2m1": np.array(E2M1_ALL),
}


def same(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Bitwise-equal float64 (NaN == NaN, -0 != +0)."""
    return (np.isnan(a) & np.isnan(b)) | ((a == b) & (np.signbit(a) == np.signbit(b)))


# ----------------------------------------------------------------------------------------------- decode
@pytest.mark.parametrize("fmt", list(TABLES))
def test_every_code_decodes_to_its_table_value(fmt):
    want = TABLES[fmt]
    got = formats.decode(fmt, np.arange(want.size))
    bad = np.flatnonzero(~same(got, want))
    assert bad.size == 0, (
        f"{fmt}: code 0x{bad[0]:02X} decodes to {got[bad[0]]!r}, table says {want[bad[0]]!r}"
    )


@pytest.mark.parametrize(
    ("fmt", "max_code", "max_value"),
    [("e4m3fn", 0x7E, 448.0), ("e4m3fnuz", 0x7F, 240.0), ("e5m2", 0x7B, 57344.0), ("e2m1", 0x7, 6.0)],
)
def test_the_largest_finite_code_is_the_format_max(fmt, max_code, max_value):
    assert formats.decode(fmt, [max_code])[0] == max_value == formats.get(fmt).max


def test_e8m0_decodes_powers_of_two_and_0xff_as_nan():
    got = formats.e8m0_decode(np.arange(256))
    assert got[127] == 1.0 and got[128] == 2.0 and got[126] == 0.5
    assert got[0] == 2.0**-127 and got[254] == 2.0**127
    assert np.isnan(got[255]) and np.isfinite(got[:255]).all()
    assert (got[1:255] / got[0:254] == 2.0).all()


def test_out_of_range_codes_are_refused():
    with pytest.raises(SpecError, match="codes"):
        formats.decode("e2m1", [16])


# ----------------------------------------------------------------------------------------------- encode
@pytest.mark.parametrize("fmt", list(TABLES))
def test_every_finite_value_encodes_back_to_its_code(fmt):
    table = TABLES[fmt]
    codes = np.flatnonzero(np.isfinite(table))
    got = formats.encode(fmt, table[codes])
    bad = np.flatnonzero(got != codes)
    assert bad.size == 0, (
        f"{fmt}: {table[codes[bad[0]]]!r} encodes to 0x{got[bad[0]]:02X}, not 0x{codes[bad[0]]:02X}"
    )


@pytest.mark.parametrize("fmt", ["e4m3fn", "e4m3fnuz", "e5m2", "e2m1"])
def test_midpoints_round_to_the_even_code(fmt):
    table = TABLES[fmt]
    pos = table[: table.size // 2]
    pos = pos[np.isfinite(pos)]
    mids = (pos[:-1] + pos[1:]) / 2
    got = formats.encode(fmt, mids)
    low_code = np.arange(mids.size)  # the lower neighbour's code is its index in the positive half
    want = np.where(low_code % 2 == 0, low_code, low_code + 1)
    bad = np.flatnonzero(got != want)
    assert bad.size == 0, (
        f"{fmt}: midpoint {mids[bad[0]]!r} -> 0x{got[bad[0]]:02X}, want 0x{want[bad[0]]:02X}"
    )


@pytest.mark.parametrize(
    ("fmt", "x", "want"),
    [
        # just off a midpoint rounds to the nearer neighbour
        ("e4m3fn", 1.0625 + 1e-12, 1.125),
        ("e4m3fn", 1.0625 - 1e-12, 1.0),
        ("e4m3fn", 1.1875, 1.25),  # midpoint of 1.125 (odd) and 1.25 (even): up
        ("e4m3fn", 0.0009765625, 0.0),  # half the smallest subnormal: ties to 0
        ("e4m3fn", 0.00146484375, 0.001953125),  # 0.75 of it: up
        ("e4m3fn", 464.0, 448.0),  # midpoint of 448 and (absent) 480: saturates
        ("e4m3fn", 1e6, 448.0),
        ("e4m3fn", -1e6, -448.0),
        ("e4m3fn", INF, 448.0),
        ("e4m3fnuz", 248.0, 240.0),
        ("e4m3fnuz", 0.00048828125, 0.0),  # ties to 0 (half the smallest subnormal 2^-10)
        ("e5m2", 61440.0, 57344.0),
        ("e5m2", -INF, -57344.0),
        ("e2m1", 5.0, 4.0),  # midpoint of 4 (even) and 6 (odd)
        ("e2m1", 2.5, 2.0),
        ("e2m1", 3.5, 4.0),
        ("e2m1", 0.25, 0.0),
        ("e2m1", 0.75, 1.0),
        ("e2m1", 7.0, 6.0),
        ("e2m1", 100.0, 6.0),
    ],
)
def test_rounding_ties_and_saturation(fmt, x, want):
    got = formats.decode(fmt, formats.encode(fmt, [x]))[0]
    assert got == want, f"{fmt}: {x!r} -> {got!r}, want {want!r}"
    assert formats.round_to(fmt, [x])[0] == want


@pytest.mark.parametrize(("fmt", "code"), [("e4m3fn", 0x7F), ("e4m3fnuz", 0x80), ("e5m2", 0x7E)])
def test_nan_encodes_to_the_formats_nan(fmt, code):
    assert formats.encode(fmt, [NAN])[0] == code


def test_e2m1_has_no_nan_to_encode():
    with pytest.raises(SpecError, match="x"):
        formats.encode("e2m1", [NAN])


@pytest.mark.parametrize(
    ("fmt", "code"), [("e4m3fn", 0x80), ("e4m3fnuz", 0x00), ("e5m2", 0x80), ("e2m1", 0x8)]
)
def test_negative_zero_and_negative_underflow(fmt, code):
    assert formats.encode(fmt, [-0.0])[0] == code
    assert formats.encode(fmt, [-1e-30])[0] == code


def test_e2m1_packs_two_codes_per_byte_low_nibble_first():
    codes = np.array([0x1, 0x7, 0xF, 0x8])
    packed = formats.pack_e2m1(codes)
    assert packed.tolist() == [0x71, 0x8F]
    assert formats.unpack_e2m1(packed).tolist() == codes.tolist()


# ----------------------------------------------------------------------------------------------- E8M0 scales
def test_e8m0_encodes_powers_of_two_and_refuses_others():
    assert formats.e8m0_encode([1.0, 2.0**-127, 2.0**127, 0.25, NAN]).tolist() == [127, 0, 254, 125, 255]
    with pytest.raises(SpecError, match="scale"):
        formats.e8m0_encode([3.0])


@pytest.mark.parametrize(
    ("amax", "elem", "rounding", "want"),
    [
        # ceil: 2^ceil(log2(amax / max)); never clips
        (6.0, "e2m1", "ceil", 1.0),
        (6.000001, "e2m1", "ceil", 2.0),
        (3.0, "e2m1", "ceil", 0.5),
        (0.1, "e2m1", "ceil", 2.0**-5),  # 0.1 / 6 = 0.0167 -> 2^-5 = 0.03125
        (448.0, "e4m3fn", "ceil", 1.0),
        (449.0, "e4m3fn", "ceil", 2.0),
        (7.0, "e4m3fn", "ceil", 2.0**-6),  # 7 / 448 = 2^-6 exactly
        (240.0, "e4m3fnuz", "ceil", 1.0),
        # floor (OCP MX 6.3): 2^(floor(log2 amax) - emax_elem), emax_elem = 2 for e2m1, 8 for e4m3fn
        (6.0, "e2m1", "floor", 1.0),
        (7.99, "e2m1", "floor", 1.0),  # clips: 7.99 / 1 > 6
        (8.0, "e2m1", "floor", 2.0),
        (0.1, "e2m1", "floor", 2.0**-6),
        (448.0, "e4m3fn", "floor", 1.0),
        # threshold_1p75 (vLLM CUTLASS): floor, plus one when the mantissa of amax is >= 1.75
        (6.0, "e2m1", "threshold_1p75", 1.0),
        (6.99, "e2m1", "threshold_1p75", 1.0),
        (7.0, "e2m1", "threshold_1p75", 2.0),
        (0.0, "e2m1", "ceil", 0.0),  # no epsilon: the scale is 0 and x / s is 0 / 0
    ],
)
def test_ue8m0_scale_rounding_modes(amax, elem, rounding, want):
    assert formats.ue8m0_scale([amax], elem, rounding)[0] == want


def test_ue8m0_scale_is_exact_at_powers_of_two_times_max():
    amax = 448.0 * 2.0 ** np.arange(-30, 30)
    assert (formats.ue8m0_scale(amax, "e4m3fn", "ceil") == 2.0 ** np.arange(-30, 30)).all()
    assert (
        formats.ue8m0_scale(np.nextafter(amax, np.inf), "e4m3fn", "ceil") == 2.0 ** np.arange(-29, 31)
    ).all()


def test_unknown_rounding_mode_names_the_field():
    with pytest.raises(SpecError, match="scale_rounding"):
        formats.ue8m0_scale([1.0], "e2m1", "nearest")


# ----------------------------------------------------------------------------------------------- round trips
@pytest.mark.parametrize("fmt", ["e4m3fn", "e4m3fnuz", "e5m2", "e2m1"])
def test_rounding_is_idempotent_and_never_farther_than_a_neighbour(fmt):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(20000) * 2.0 ** rng.integers(-12, 12, 20000)
    r = formats.round_to(fmt, x)
    assert same(formats.round_to(fmt, r), r).all()
    table = TABLES[fmt]
    finite = np.unique(table[np.isfinite(table)])
    clipped = np.clip(x, finite[0], finite[-1])
    nearest = np.abs(clipped[:, None] - finite[None, :]).min(axis=1)
    assert (np.abs(clipped - r) == nearest).all(), "some value did not round to a nearest representable one"
