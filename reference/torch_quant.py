"""The PyTorch oracle's quantized forward, written independently of numpy_quant.py and formats.py.

    piece             numpy side (numpy_quant / formats)            this module
    fp8 decode        bit fields -> value table                      torch's float8 dtypes (.view(...).double())
    e2m1 decode       bit fields                                     the literal 16-value table (as transformers)
    E8M0 decode       ldexp(1, code - 127)                           pow2(code - 127) (bits), 0xFF -> NaN
    RTNE-saturate     frexp quantum + np.rint                        nearest neighbour in the sorted value
                                                                     table, ties to the even code
    ue8m0 ceil        frexp guess + exact correction                 log2 guess + exact correction
    GEMM              x' @ W.T on dequantized values                 sum_g s_x[r, g] * s_w[n // bn, g]
                                                                       * (q_x[r, g] . q_w[n, g])  (the kernel's
                                                                       grouped formula, per expert)

Both compute in float64; they agree to ~1e-12 (tests/reference/test_quant_oracles.py).
"""

from __future__ import annotations

import torch

from moe_cts.reference import torch_oracle as base
from moe_cts.reference.qweights import QuantizedMoEWeights, QuantTensor, as_quantized
from moe_cts.reference.spec import MoESpec, check_input

F64 = torch.float64
_FP8 = {"e4m3fn": torch.float8_e4m3fn, "e4m3fnuz": torch.float8_e4m3fnuz, "e5m2": torch.float8_e5m2}
_E2M1 = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0)


def decode(fmt: str, codes: torch.Tensor) -> torch.Tensor:
    """float64 values of uint8 element codes (e2m1: one code per element, unpacked)."""
    if fmt == "e2m1":
        return torch.tensor(_E2M1, dtype=F64, device=codes.device)[codes.long()]
    return codes.contiguous().view(_FP8[fmt]).to(F64)


def _finite_table(fmt: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Sorted finite values of a format and their codes' parity (0 = even code), -0 dropped."""
    vals = decode(fmt, torch.arange(16 if fmt == "e2m1" else 256, dtype=torch.uint8))
    codes = torch.arange(vals.numel())
    keep = torch.isfinite(vals) & ~((vals == 0) & torch.signbit(vals))
    v, c = vals[keep], codes[keep]
    order = torch.argsort(v)
    return v[order], (c[order] % 2)


def round_sat(fmt: str, x: torch.Tensor) -> torch.Tensor:
    """x to the nearest value of `fmt` (ties: the even code), saturating at the largest finite one;
    NaN stays NaN. -0 results are returned as 0 (they compare and multiply alike)."""
    vals, parity = _finite_table(fmt)
    vals, parity = vals.to(x.device), parity.to(x.device)
    xc = x.clamp(vals[0], vals[-1])  # saturation (+-inf too); NaN passes through clamp
    hi = torch.searchsorted(vals, xc.nan_to_num(0.0)).clamp(1, vals.numel() - 1)
    lo_v, hi_v = vals[hi - 1], vals[hi]
    mid = (lo_v + hi_v) / 2  # exact: both have few significant bits
    take_hi = (xc > mid) | ((xc == mid) & (parity[hi] == 0))
    out = torch.where(take_hi, hi_v, lo_v)
    return torch.where(torch.isnan(x), x, out)


def pow2(e: torch.Tensor) -> torch.Tensor:
    """2^e in float64 for integer-valued e, assembled from the exponent bits: exact on every device, where
    `2.0 ** e` is not (an H200 gave 0.06249999999999999 for 2^-4, session 7). e is clamped to float64's
    normal exponents [-1022, 1023]; the scales here live in [-127, 127]."""
    return ((e.clamp(-1022, 1023).long() + 1023) << 52).view(F64)


def _ue8m0(amax: torch.Tensor, elem_max: float, elem_emax: int, rounding: str) -> torch.Tensor:
    """Power-of-two scale of amax (formats.ue8m0_scale's contract, computed another way)."""
    a = amax.clamp(min=0)
    safe = torch.where(torch.isfinite(a) & (a > 0), a, torch.ones_like(a))
    fl = torch.floor(torch.log2(safe))
    fl = torch.where(pow2(fl) > safe, fl - 1, fl)
    fl = torch.where(pow2(fl + 1) <= safe, fl + 1, fl)  # now 2^fl <= safe < 2^(fl+1) exactly
    if rounding == "floor":
        e = fl - elem_emax
    elif rounding == "threshold_1p75":
        e = fl + (safe >= 1.75 * pow2(fl)).to(F64) - elem_emax
    else:
        e = torch.ceil(torch.log2(safe / elem_max))
        e = torch.where(elem_max * pow2(e - 1) >= safe, e - 1, e)
        e = torch.where(elem_max * pow2(e) < safe, e + 1, e)
    s = pow2(e.clamp(-127, 127))
    s = torch.where(amax == 0, torch.zeros_like(s), s)
    return torch.where(torch.isnan(amax), amax, s)


def quantize_act(
    spec: MoESpec, x: torch.Tensor, static: float | None
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Rows (R, K) -> (q (R, K) element values, s (R, G) scales, group width g); x' = q * s per group."""
    q = spec.quant
    R, K = x.shape
    fmax = float(decode(q.fp8_format, torch.arange(256, dtype=torch.uint8)).nan_to_num(0, 0, 0).abs().max())
    g = q.act_group if q.method == "fp8_block" else K
    G = max(1, -(-K // g))
    if static is not None:
        s = torch.full((R, G), float(static), dtype=F64, device=x.device)
    else:
        padded = torch.nn.functional.pad(x.abs(), (0, G * g - K)) if R else x.new_zeros((0, G * g))
        amax = padded.view(R, G, g).amax(dim=2) if R else x.new_zeros((0, G))
        if q.method == "fp8_per_tensor":
            amax = (amax.amax() if R else x.new_zeros(())).expand(R, G)
        if q.amax_eps is not None:
            amax = torch.where(torch.isnan(amax), amax, amax.clamp(min=q.amax_eps))
        if q.scale_format == "ue8m0":
            emax = int(torch.floor(torch.log2(torch.tensor(fmax))))
            s = _ue8m0(amax, fmax, emax, q.scale_rounding)
        else:
            s = (amax / fmax).float().double()
    s_full = s.repeat_interleave(g, dim=1)[:, :K]
    return round_sat(q.fp8_format, x / s_full), s, g


def _weight_parts(qt: QuantTensor, e: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Element values (N, K) and float64 scales (Nb, Kb) of one expert's (or the only) matrix."""
    codes, scales = (qt.codes, qt.scales) if e is None else (qt.codes[e], qt.scales[e])
    if qt.packed:
        codes = torch.stack([codes & 0xF, codes >> 4], dim=-1).flatten(-2)
    if qt.scale_dtype == "e8m0":
        s = torch.where(scales == 0xFF, torch.nan, pow2(scales.to(F64) - 127))
    else:
        s = scales.to(F64)
    return decode(qt.fmt, codes), s


def grouped_gemm(qx: torch.Tensor, sx: torch.Tensor, gx: int, qt: QuantTensor, e: int | None) -> torch.Tensor:
    """y[r, n] = sum_g sx[r, g] * sw[n // bn, g] * sum_{k in g} qx[r, k] qw[n, k]. Activation groups are
    gx wide and the weight blocks bk wide; g runs over the finer of the two (one always divides the other)."""
    qw, sw = (t.to(qx.device) for t in _weight_parts(qt, e))  # codes may live on the CPU
    (N, K), (bn, bk) = qw.shape, qt.block
    g = min(gx, bk)
    out = qx.new_zeros((qx.shape[0], N))
    for k0 in range(0, K, g):
        part = qx[:, k0 : k0 + g] @ qw[:, k0 : k0 + g].T  # (R, N)
        s_w = sw[:, k0 // bk].repeat_interleave(bn)[:N]  # (N,)
        out = out + sx[:, k0 // gx, None] * s_w[None, :] * part
    return out


def _inputs(spec: MoESpec, x: torch.Tensor, point: str, static: float | None):
    if point in spec.quant.quantize_inputs:
        return quantize_act(spec, x, static)
    return x, torch.ones((x.shape[0], 1), dtype=F64, device=x.device), max(x.shape[1], 1)


def _experts(spec, qt: QuantTensor, bias, rows: torch.Tensor, ids: torch.Tensor, qx, sx, g, width: int):
    """out[n] = GEMM(row rows[n], expert ids[n]) + bias, expert by expert."""
    out = qx.new_zeros((ids.numel(), width))
    for e in torch.unique(ids).tolist():
        sel = torch.nonzero(ids == e)[:, 0]
        r = rows[sel]
        out[sel] = grouped_gemm(qx[r], sx[r], g, qt, e) + (0.0 if bias is None else bias[e].to(F64))
    return out


def gate_up(spec: MoESpec, qw: QuantizedMoEWeights, x, topk_ids) -> base.GateUp:
    dev = qw.device
    x, ids = base._f64(x, dev), base._ids(topk_ids, dev)
    T, k = ids.shape
    qx, sx, g = _inputs(spec, x, "gemm1", qw.a13_scale)
    tokens = torch.arange(T, device=dev).repeat_interleave(k)
    h = _experts(spec, qw.w13, qw.base.b13, tokens, ids.reshape(-1), qx, sx, g, spec.w13_rows).view(
        T, k, spec.w13_rows
    )
    if not spec.gated:
        return base.GateUp(gate_pre=h, up_pre=None, act=base.activate(spec, h, None))
    I = spec.intermediate_size
    pairs = h.view(T, k, 2, I).transpose(-1, -2) if spec.w13_layout == "concat" else h.view(T, k, I, 2)
    gate, up = pairs[..., 0].contiguous(), pairs[..., 1].contiguous()
    return base.GateUp(gate_pre=gate, up_pre=up, act=base.activate(spec, gate, up))


def down(spec: MoESpec, qw: QuantizedMoEWeights, act, topk_ids) -> torch.Tensor:
    dev = qw.device
    act, ids = base._f64(act, dev), base._ids(topk_ids, dev)
    T, k = ids.shape
    qa, sa, g = _inputs(spec, act.reshape(T * k, spec.intermediate_size), "gemm2", qw.a2_scale)
    flat = torch.arange(T * k, device=dev)
    return _experts(spec, qw.w2, qw.base.b2, flat, ids.reshape(-1), qa, sa, g, spec.hidden_size).view(
        T, k, spec.hidden_size
    )


def shared_expert(spec: MoESpec, qw: QuantizedMoEWeights, x) -> torch.Tensor:
    dev = qw.device
    x = base._f64(x, dev)
    if spec.shared_width == 0:
        return x.new_zeros((x.shape[0], spec.hidden_size))
    h = grouped_gemm(*_inputs(spec, x, "gemm1", qw.a13_scale), qw.shared_w13, None)
    if spec.gated:
        gate, up = h.view(x.shape[0], 2, spec.shared_width).unbind(dim=1)
        a = base.activate(spec, gate, up)
    else:
        a = base.activate(spec, h, None)
    out = grouped_gemm(*_inputs(spec, a, "gemm2", qw.a2_scale), qw.shared_w2, None)
    if spec.shared_gate:
        out = torch.sigmoid(x @ base._f64(qw.base.shared_gate, dev).T) * out
    return out


def moe_forward(spec: MoESpec, weights, x) -> base.MoEResult:
    """route -> permute -> quantized gate_up -> quantized down -> combine (+ quantized shared)."""
    qw = as_quantized(spec, weights)
    x = base._f64(x, qw.device)
    check_input(spec, x)
    r = base.route(spec, qw.base, x)
    p = base.permute(spec, r.topk_ids)
    gu = gate_up(spec, qw, x, r.topk_ids)
    eo = down(spec, qw, gu.act, r.topk_ids)
    so = shared_expert(spec, qw, x)
    y = base.combine(spec, eo, r.topk_weights, p.kept, so)
    return base.MoEResult(routing=r, permutation=p, gate_up=gu, expert_out=eo, shared_out=so, y=y)
