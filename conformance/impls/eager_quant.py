"""torch-eager's quantized experts: the layer computed the way an fp8 / MXFP4 kernel does, emulated in fp32.

    step                 what the kernel does                                  here (fp32 on the input's device)
    weights              codes in fp8 / e2m1, scales per (bn, bk) block        W = decode(codes) * scale[n//bn, k//bk]
    activation scale     amax per group (tensor | row | 1 x g), eps floor       s = fp32(amax / fmt.max), or a power
                                                                               of two by the scheme's ue8m0 rounding
    activation codes     saturating RTNE cast of x / s to fp8                  clamp(+-max) then torch's float8 cast
    GEMM                 fp8 x fp8 products, fp32 accumulation, scales in      (q_x * s) @ W.T in fp32
                         the epilogue
    epilogue             dequant -> + bias -> * router weight (fp32) -> cast  the same order (forward); the staged
                                                                               API returns expert_out before the
                                                                               router weight, cast to the input dtype

Every step is a method of QuantEagerMixin, so the deliberately broken implementations (broken_quant.py)
override exactly one of them. The float path of torch_eager.py is untouched: this module runs only when
spec.quant is set.
"""

from __future__ import annotations

from typing import Any

import torch

from moe_cts.reference import formats
from moe_cts.reference.spec import MoESpec

F32 = torch.float32
FP8_DTYPES = {"e4m3fn": torch.float8_e4m3fn, "e4m3fnuz": torch.float8_e4m3fnuz, "e5m2": torch.float8_e5m2}
E2M1_VALUES = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0)


class QuantEagerMixin:
    """The quantized stages of torch-eager (module docstring); mixed into TorchEagerImplementation."""

    # -- formats
    def fp8_max(self, fmt: str) -> float:
        return formats.get(fmt).max

    def cast_fp8(self, fmt: str, v: torch.Tensor) -> torch.Tensor:
        """fp32 values of the fp8 codes of v: saturate, then RTNE (torch's float8 conversion); NaN stays."""
        m = self.fp8_max(fmt)
        return v.clamp(-m, m).to(FP8_DTYPES[fmt]).to(F32)

    def pow2_scale(self, spec: MoESpec, amax: torch.Tensor) -> torch.Tensor:
        """ue8m0 scales 2^e of amax (fp32) by the scheme's rounding; amax = 0 -> 0, NaN -> NaN."""
        q = spec.quant
        f = formats.get(q.fp8_format)
        a = torch.where(torch.isfinite(amax) & (amax > 0), amax, torch.ones_like(amax))
        if q.scale_rounding == "ceil":  # smallest 2^e with 2^e * max >= amax
            m, e = torch.frexp(a / f.max)  # ratio = m 2^e, m in [0.5, 1): ceil(log2) = e - (m == 0.5)
            e = e - (m == 0.5).to(e.dtype)
            e = torch.where(f.max * torch.ldexp(torch.ones_like(a), e.to(F32)) < a, e + 1, e)
        else:
            m, e = torch.frexp(a)  # floor(log2 a) = e - 1
            e = e - 1 - f.emax
            if q.scale_rounding == "threshold_1p75":
                e = e + (m >= 0.875).to(e.dtype)
        s = torch.ldexp(torch.ones_like(a), e.clamp(-127, 127).to(F32))
        s = torch.where(amax == 0, torch.zeros_like(s), s)
        return torch.where(torch.isnan(amax), amax, s)

    # -- activations
    def amax_floor(self, spec: MoESpec, amax: torch.Tensor) -> torch.Tensor:
        eps = spec.quant.amax_eps
        return amax if eps is None else torch.where(torch.isnan(amax), amax, amax.clamp(min=eps))

    def act_scales(self, spec: MoESpec, x: torch.Tensor, static: float | None) -> tuple[torch.Tensor, int]:
        """(scales (R, G) fp32, group width g) of rows x (R, K)."""
        q = spec.quant
        R, K = x.shape
        g = q.act_group if q.method == "fp8_block" else max(K, 1)
        G = max(1, -(-K // g))
        if static is not None:
            return torch.full((R, G), float(static), dtype=F32, device=x.device), g
        padded = torch.nn.functional.pad(x.abs(), (0, G * g - K))
        amax = padded.view(R, G, g).amax(dim=2) if R else x.new_zeros((0, G))
        if q.method == "fp8_per_tensor":
            amax = (amax.amax() if R else x.new_zeros(())).expand(R, G)
        amax = self.amax_floor(spec, amax)
        if q.scale_format == "ue8m0":
            return self.pow2_scale(spec, amax), g
        return amax / self.fp8_max(q.fp8_format), g

    def quantize_act(self, spec: MoESpec, x: torch.Tensor, static: float | None, point: str) -> torch.Tensor:
        """Rows (R, K) -> fp32 values q * s of their fp8 codes (x itself, in fp32, when not quantized)."""
        x = x.to(F32)
        if point not in spec.quant.quantize_inputs or x.shape[0] == 0:
            return x
        s, g = self.act_scales(spec, x, static)
        s_full = s.repeat_interleave(g, dim=1)[:, : x.shape[1]]
        return self.cast_fp8(spec.quant.fp8_format, x / s_full) * s_full

    # -- weights
    def weight_scales(self, qt, e: int | None) -> torch.Tensor:
        """(Nb, Kb) fp32 scales of one expert's matrix (or the only one)."""
        s = qt.scales if e is None else qt.scales[e]
        if qt.scale_dtype == "e8m0":
            return torch.where(s == 0xFF, torch.nan, torch.ldexp(torch.ones(s.shape), s.to(F32) - 127))
        return s.to(F32)

    def weight_elements(self, qt, e: int | None) -> torch.Tensor:
        """(N, K) fp32 element values of the codes."""
        c = qt.codes if e is None else qt.codes[e]
        if qt.packed:
            c = torch.stack([c & 0xF, c >> 4], dim=-1).flatten(-2)
            return torch.tensor(E2M1_VALUES, dtype=F32)[c.long()]
        return c.contiguous().view(FP8_DTYPES[qt.fmt]).to(F32)

    def dequant_weight(self, qt, e: int | None, device) -> torch.Tensor:
        q = self.weight_elements(qt, e)
        N, K = q.shape
        bn, bk = qt.block
        s = self.weight_scales(qt, e).repeat_interleave(bn, 0).repeat_interleave(bk, 1)[:N, :K]
        return (q * s).to(device)

    # -- GEMMs and the epilogue
    def add_bias(
        self, spec: MoESpec, y: torch.Tensor, bias: torch.Tensor | None, xq: torch.Tensor, qt, e
    ) -> torch.Tensor:
        """Epilogue after the dequantized product: + bias in fp32 (dequant -> bias)."""
        return y if bias is None else y + bias.to(F32)

    def qgemm(self, spec: MoESpec, xq: torch.Tensor, qt, e: int | None, bias) -> torch.Tensor:
        """(R, K) quantized activation values x (N, K) dequantized weight -> (R, N) fp32, bias added."""
        y = xq @ self.dequant_weight(qt, e, xq.device).T
        return self.add_bias(spec, y, bias, xq, qt, e)

    def q_gate_up(self, spec: MoESpec, qw, x: torch.Tensor, topk_ids: torch.Tensor) -> torch.Tensor:
        """act (T, k, I) fp32: GEMM1 on the quantized x, bias, activation."""
        xq = self.quantize_act(spec, x, qw.a13_scale, "gemm1")
        b13 = qw.base.b13 if spec.expert_bias else None
        return self.q_per_expert(
            spec,
            topk_ids,
            spec.intermediate_size,
            xq,
            lambda e, t, j: self.activate(
                spec, *self.split(spec, self.qgemm(spec, xq[t], qw.w13, e, None if b13 is None else b13[e]))
            ),
        )

    def q_down(self, spec: MoESpec, qw, act: torch.Tensor, topk_ids: torch.Tensor) -> torch.Tensor:
        """expert_out (T, k, H) fp32: GEMM2 on the requantized activation of every assignment."""
        T, k = topk_ids.shape
        aq = self.quantize_act(spec, act.reshape(T * k, spec.intermediate_size), qw.a2_scale, "gemm2")
        aq = aq.view(T, k, spec.intermediate_size)
        b2 = qw.base.b2 if spec.expert_bias else None
        return self.q_per_expert(
            spec,
            topk_ids,
            spec.hidden_size,
            aq,
            lambda e, t, j: self.qgemm(spec, aq[t, j], qw.w2, e, None if b2 is None else b2[e]),
        )

    def q_shared(self, spec: MoESpec, qw, x: torch.Tensor) -> torch.Tensor | None:
        if not spec.shared_width:
            return None
        h = self.qgemm(spec, self.quantize_act(spec, x, qw.a13_scale, "gemm1"), qw.shared_w13, None, None)
        S = spec.shared_width
        act = self.activate(spec, h[:, :S], h[:, S:]) if spec.gated else self.activate(spec, h, None)
        out = self.qgemm(spec, self.quantize_act(spec, act, qw.a2_scale, "gemm2"), qw.shared_w2, None, None)
        if spec.shared_gate:
            out = torch.sigmoid(x.to(F32) @ qw.base.shared_gate.to(F32).to(x.device).T) * out
        return out

    def q_per_expert(self, spec: MoESpec, topk_ids, width: int, like: torch.Tensor, rows) -> torch.Tensor:
        T, k = topk_ids.shape
        out = torch.zeros((T, k, width), dtype=F32, device=like.device)
        for e in range(spec.num_experts):
            t_idx, j_idx = torch.nonzero(topk_ids == e, as_tuple=True)
            if t_idx.numel():
                out[t_idx, j_idx] = rows(e, t_idx, j_idx)
        return out

    def q_forward(self, spec: MoESpec, w, qw, x: torch.Tensor) -> torch.Tensor:
        """route -> quantized experts in fp32 -> y = shared + sum_j kept w_j eo_j in fp32 -> cast once."""
        qw = _on(qw, x.device)
        r = self.route(spec, w, x)
        kept = self.kept_mask(spec, r.topk_ids.long())
        act = self.q_gate_up(spec, qw, x, r.topk_ids)
        eo = self.q_down(spec, qw, act, r.topk_ids)
        y = torch.zeros((x.shape[0], spec.hidden_size), dtype=F32, device=x.device)
        so = self.q_shared(spec, qw, x)
        if so is not None:
            y = y + so
        contrib = torch.where(kept[..., None], r.topk_weights[..., None].to(F32) * eo, torch.zeros_like(eo))
        return (y + contrib.sum(dim=1)).to(x.dtype)

    def run_quant(self, inputs, stage: str) -> Any:
        """The stages that change under quantization; the others run the float path (torch_eager.py)."""
        spec, x, qw = inputs.spec, inputs.x, _on(inputs.qweights, inputs.x.device)
        if stage == "gate_up":
            return self.q_gate_up(spec, qw, x, inputs.topk_ids).to(x.dtype)
        if stage == "down":
            return self.q_down(spec, qw, inputs.act, inputs.topk_ids).to(x.dtype)
        return self.q_forward(spec, inputs.weights, qw, x)


def _on(qw, device):
    """Biases and gates of the quantized weights on the input's device (codes stay where they are)."""
    return qw.replace(base=qw.base.to(device)) if qw.base.device != torch.device(device) else qw
