"""Cases whose experts are too large for the host judge: the whole batch on the device, the oracle on sampled
rows over a sub-problem holding only the experts those rows route to.

The runner's session holds float64 views of every expert (values, |values|, squares; quantized cases also
the exact dequantized base and its views): ~90 GB per copy-set for DeepSeek-V3's 256 experts. Tokens are
independent (no capacity dropping) and a token's output depends only on the router, its k experts and the
shared expert, so:

    inputs = lean inputs (quant_large.py: the case's codes and scales, no float64 routed experts)
    y = impl.forward(inputs)                        whole batch, on the device (sampled.whole_batch: memory
                                                    verdict = NaN/inf rows where x is finite, canaries)
    rows = sample_rows(case)                        sampled.py's rows (every row when T is small)
    full = route(spec, router, x[rows])             the oracle's routing on the FULL router (float64):
                                                    grouped top-k, correction bias and the softmax
                                                    denominator need every expert's logit
    groups = rows split so each group's experts     at most max_experts(spec) experts per sub-problem
             fit SUB_BYTES of float64 views         (at most MAX_GROUPS groups: the rest is not judged)
    per group, touched = sorted experts of its rows
        sub-spec     num_experts = len(touched), no groups (routing is given), local_experts remapped
        sub-weights  every per-expert tensor sliced to touched (w13, w2, b13, b2, router rows, router and
                     correction bias; QuantTensor codes and scales of w13 / w2 sliced before any float64
                     conversion); shared experts, shared gate and static scales whole
        routing      the full routing's columns `touched`, ids remapped (e -> its place in touched), with
                     the full e_scores / e_keys: tw, e_w, kept and the bad-row mask equal the full problem's
        session      the runner's session on (x[group rows], sub-problem, routing): its end_to_end oracle
    end_to_end = one compare of y[judged rows] against the groups' oracle rows, tie rows masked (ambiguity
                 computed on the full keys)

Only end_to_end and the whole-batch memory check are judged; the verdict message says how many rows and
experts were sampled.

    needs_expert_sampling(case) -> bool       expert parameters E (w13_rows H + H I) above SAMPLE_EXPERTS_ABOVE
                                              (quantized: twice the parameters above it)
    run_sampled_experts(session_cls, impl, case, device, strict_ties) -> list[StageVerdict]
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

import moe_cts.reference.numpy_oracle as npo
from moe_cts.conformance.engine import judge, sampled, tolerance
from moe_cts.conformance.engine.cases import Case, CaseInputs
from moe_cts.conformance.engine.devices import Device, accumulator_profile
from moe_cts.conformance.engine.results import Outcome, StageVerdict
from moe_cts.reference.qweights import QuantizedMoEWeights, QuantTensor
from moe_cts.reference.spec import MoESpec, MoEWeights

#: routed expert parameters above this (float cases; quantized cases count twice): sampled experts. The
#: session holds ~4 float64 copies of every expert for a float case (values, |values|, squares, a temporary):
#: 2^31 parameters are 64 GiB of them; a quantized case holds ~8 (the case weights' views and the dequantized
#: base's). Past it: DeepSeek-V3 (11.3 G), gpt-oss-120b MXFP4 (3.2 G x 2), Mixtral 8x7B quantized (1.4 G x 2);
#: below it, judged whole as before: Mixtral 8x7B float (1.4 G, the must-pass mixtral-8x7b-full), gpt-oss-20b
#: MXFP4 (0.8 G x 2).
SAMPLE_EXPERTS_ABOVE = 2**31
QUANT_COPIES_FACTOR = 2
#: host bytes of one sub-problem's float64 copies of its experts (quantized: base, val, abs, sq and one
#: temporary |nobias|; float: val, abs, sq, the case weights and one temporary)
SUB_BYTES = 24 * 2**30
FLOAT64_COPIES = 5
#: sub-problems per case: each dequantizes and runs its experts on the host (DeepSeek-V3: ~13 experts each)
MAX_GROUPS = 8
#: per-expert fields of MoEWeights (leading dim E) and of QuantizedMoEWeights
PER_EXPERT = ("router", "w13", "w2", "router_bias", "correction_bias", "b13", "b2")


def expert_params(spec: MoESpec) -> int:
    return spec.num_experts * (spec.w13_rows * spec.hidden_size + spec.hidden_size * spec.intermediate_size)


def needs_expert_sampling(case: Case) -> bool:
    factor = 1 if case.spec.quant is None else QUANT_COPIES_FACTOR
    return expert_params(case.spec) * factor > SAMPLE_EXPERTS_ABOVE


def max_experts(spec: MoESpec) -> int:
    """Experts per sub-problem: SUB_BYTES of float64 copies, never fewer than top_k (one row's experts)."""
    per = FLOAT64_COPIES * 8 * expert_params(spec) // spec.num_experts
    return max(spec.top_k, SUB_BYTES // max(per, 1))


def group_rows(ids: np.ndarray, limit: int, max_groups: int) -> list[np.ndarray]:
    """Greedy split of rows (indices into ids (R, k), in order) into groups touching at most `limit` experts
    each; rows that would open group max_groups + 1 are dropped."""
    groups: list[list[int]] = []
    touched: set[int] = set()
    for r in range(ids.shape[0]):
        row = set(ids[r].tolist())
        if groups and len(touched | row) <= limit:
            groups[-1].append(r)
            touched |= row
        elif len(groups) < max_groups:
            groups.append([r])
            touched = row
    return [np.array(g, dtype=np.int64) for g in groups]


def router_only(weights: MoEWeights) -> MoEWeights:
    """The router tensors, w13 / w2 as placeholders (the router reads neither): float64 views of this are
    E x H, not E x 3HI."""
    r = weights.router
    return MoEWeights(router=r, w13=r, w2=r, router_bias=weights.router_bias,
                      correction_bias=weights.correction_bias)  # fmt: skip


def _slice(t: torch.Tensor | None, idx: torch.Tensor) -> torch.Tensor | None:
    return None if t is None else t[idx.to(t.device)].clone()


def _slice_q(qt: QuantTensor, idx: torch.Tensor) -> QuantTensor:
    return QuantTensor(_slice(qt.codes, idx), _slice(qt.scales, idx), qt.fmt, qt.block, qt.scale_dtype)


def sub_spec(spec: MoESpec, touched: np.ndarray) -> MoESpec:
    """The spec of the touched experts: no groups (the routing is given), local experts remapped."""
    local = None
    if spec.local_experts is not None:
        keep = set(spec.local_experts)
        local = tuple(i for i, e in enumerate(touched.tolist()) if e in keep)
    return spec.replace(num_experts=len(touched), n_group=1, topk_group=1, local_experts=local)


def sub_inputs(inputs: CaseInputs, spec: MoESpec, touched: np.ndarray, x: torch.Tensor) -> CaseInputs:
    """CaseInputs of the sub-problem: per-expert tensors sliced to touched, the rest whole. Quantized: the
    codes are sliced, then dequantized (from_codes: float64 for the touched experts only); the session's
    case-weight views get router-sized placeholders for w13 / w2 (its quantized oracle reads the base)."""
    idx = torch.from_numpy(touched)
    w = inputs.weights
    sliced = {n: _slice(getattr(w, n), idx) for n in PER_EXPERT}
    qw = inputs.qweights
    if qw is None:
        return CaseInputs(spec=spec, x=x, weights=w.replace(**sliced).validate(spec))
    b = qw.base
    base = b.replace(**{n: _slice(getattr(b, n), idx) for n in PER_EXPERT if n not in ("w13", "w2")})
    base = base.replace(w13=base.router, w2=base.router)  # replaced by the dequantized codes
    sub_q = QuantizedMoEWeights.from_codes(
        spec, base, w13=_slice_q(qw.w13, idx), w2=_slice_q(qw.w2, idx), shared_w13=qw.shared_w13,
        shared_w2=qw.shared_w2, a13_scale=qw.a13_scale, a2_scale=qw.a2_scale,
    )  # fmt: skip
    weights = w.replace(**sliced).replace(w13=sliced["router"], w2=sliced["router"])
    return CaseInputs(spec=spec, x=x, weights=weights, qweights=sub_q)


def sub_routing(full: npo.Routing, e_scores: np.ndarray, e_keys: np.ndarray, touched: np.ndarray, rows):
    """(Routing, e_scores, e_keys) of `rows` restricted to the touched experts' columns, ids remapped."""
    place = np.full(full.scores.shape[1], -1, dtype=np.int64)
    place[touched] = np.arange(len(touched))
    ids = place[full.topk_ids[rows]]
    assert (ids >= 0).all(), "sub_routing: a row routes to an expert outside its group"
    cols = lambda a: a[rows][:, touched]
    routing = npo.Routing(logits=cols(full.logits), scores=cols(full.scores), keys=cols(full.keys),
                          topk_ids=ids, topk_weights=full.topk_weights[rows])  # fmt: skip
    return routing, cols(e_scores), cols(e_keys)


def run_sampled_experts(
    session_cls, impl, case: Case, device: Device, strict_ties: bool
) -> list[StageVerdict]:
    """The forward on the whole batch, judged on sampled rows over sub-problems of their experts (module
    docstring). session_cls: the runner's session (inputs= and routing= given)."""
    spec = case.spec
    if spec.capacity_factor is not None:  # dropping depends on the whole batch: rows are not independent
        raise ValueError("sampled experts: capacity_factor makes rows depend on each other")
    inputs = full_inputs(case, device)
    y, verdicts = sampled.whole_batch(impl, inputs, case, device)
    if y is None:
        return verdicts
    rows = sampled.sample_rows(case)
    o = oracle_rows(session_cls, impl, case, device, inputs, rows, strict_ties)
    if o is None:  # no tokens: nothing to judge beyond the whole-batch check
        return [StageVerdict("end_to_end", Outcome.PASS, message="end_to_end: no rows"), *verdicts]
    got = y[torch.from_numpy(rows[o.judged]).to(y.device)]
    v = o.session.numeric("end_to_end", got, o.y, o.e_y, o.mask)
    note = (
        f" (sampled experts: {len(o.judged)} of {case.num_tokens} rows judged, {o.experts} of "
        f"{spec.num_experts} experts touched, in {o.groups} sub-problems; only end_to_end and memory; "
        "worst indices count judged rows)"
    )
    return [dataclasses.replace(v, message=v.message + note), *verdicts]


@dataclasses.dataclass(frozen=True)
class OracleRows:
    judged: np.ndarray  # (R,) indices into the sampled rows, group by group
    y: np.ndarray  # (R, H) the oracle's output of those rows
    e_y: np.ndarray  # (R, H) its bound
    mask: np.ndarray  # (R, H) judged elements: finite rows, no (near) tie
    experts: int  # distinct experts touched
    groups: int  # sub-problems
    session: object  # the last sub-problem's session (its numeric() judge)


def oracle_rows(session_cls, impl, case: Case, device: Device, inputs: CaseInputs, rows, strict_ties):
    """OracleRows of the sampled rows, one sub-problem per group (module docstring); None without rows."""
    spec = case.spec
    x_rows = inputs.x[torch.from_numpy(rows).to(inputs.x.device)].cpu()
    model = tolerance.ErrorModel.for_case(
        accumulator_profile(device), case.dtype, impl.capabilities().fp32_dot
    )
    full, e_scores, e_keys = full_routing(model, spec, inputs.weights, x_rows)
    amb = judge.ambiguous_rows(spec, full.keys, e_keys, full.topk_ids)
    if strict_ties:
        amb &= ~judge.ambiguous_rows(spec, full.keys, 0 * e_keys, full.topk_ids)
    groups = group_rows(full.topk_ids, max_experts(spec), MAX_GROUPS)
    if not groups:
        return None
    parts, experts, s = [], set(), None
    for g in groups:
        s = None  # the previous sub-problem's float64 views go before the next one's are built
        touched = np.unique(full.topk_ids[g])
        experts |= set(touched.tolist())
        sspec = sub_spec(spec, touched)
        sub = sub_inputs(inputs, sspec, touched, x_rows[torch.from_numpy(g)].to(inputs.x.device))
        s = session_cls(impl, dataclasses.replace(case, spec=sspec), device, strict_ties, inputs=sub,
                        routing=sub_routing(full, e_scores, e_keys, touched, g))  # fmt: skip
        e2e = s.end_to_end_reference()
        parts.append((g, e2e["y"], e2e["e_y"], s.mask(1) & ~amb[g, None]))
        del sub, e2e
    cat = lambda i: np.concatenate([p[i] for p in parts])
    return OracleRows(cat(0), cat(1), cat(2), cat(3), len(experts), len(groups), s)


def full_inputs(case: Case, device: Device) -> CaseInputs:
    if case.spec.quant is None:
        return case.build_inputs(device.torch_device)
    from moe_cts.conformance.engine.quant_large import lean_quantized_inputs

    return lean_quantized_inputs(case, device.torch_device)


def full_routing(model: tolerance.ErrorModel, spec: MoESpec, weights: MoEWeights, x: torch.Tensor):
    """(Routing, e_scores, e_keys) of x (R, H) on the full router, as the session computes them."""
    rv = tolerance.WeightViews.of(router_only(weights))
    xf = x.to(torch.float64).numpy()
    routing = npo.route(spec, rv.val, xf)
    e_scores, e_keys = tolerance.router_bounds(model, spec, rv, xf, routing)
    return routing, e_scores, e_keys
