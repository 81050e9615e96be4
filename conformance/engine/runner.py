"""run_case: one case, one implementation, one device -> CaseResult with a verdict per stage.

    1. waivers (device matrix) and claimed capabilities     -> Waived / NotSupported before any input
    2. inputs from the case seed; float64 oracle on the same rounded inputs; error bounds (tolerance.py)
    3. each exposed stage, fed the oracle's output of the previous stage (rounded to the storage dtype):
       router (tie-aware) -> permutation (exact) -> gemm1 -> gemm2 -> combine; the later stages use the
       implementation's accepted ids, with the oracle re-run on them
    4. end to end into a NaN-poisoned view with canaries either side (memory), twice when the
       implementation claims determinism, and on sub-batches (engine/invariance.py: single tokens, the batch
       reversed, its first half) when it claims batch invariance; the tile table it read (engine/provenance.py)

strict_ties=True (`moe-cts certify --strict-ties`): one tie rule everywhere. A tie broken differently from
the oracle's lower-id rule is a routing Fail instead of a CompatibilityWarning, and a forward-only
implementation is judged on exact-tie rows too (only near ties, within the score error, stay unjudged).

Memory coverage: with `out=` (Capabilities.accepts_out) an element still holding the poison bits is
unwritten and a changed canary is a write outside the output: both a memory Fail. Without `out=` the
forward runs with torch's fill_uninitialized_memory on, so torch.empty workspaces start as NaN and an
unwritten element shows up as a NaN where the oracle is finite (end_to_end Fail); writes past the end of
the implementation's own allocation are not detectable from Python.

Never raises for implementation errors: NotSupportedError -> NotSupported (its message kept in the result),
an exception that matches a known limit of the device (device matrix `known_issues`) -> Waived with the
limit's reason, any other exception -> Crash (traceback summary in the message), exceptions of the harness
or oracle -> InternalError. A case with a waived stage and nothing worse is Waived, never Pass.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from typing import Any

import numpy as np
import torch

import moe_cts.reference.numpy_oracle as npo
from moe_cts.conformance.engine import (
    invariance,
    judge,
    known_issues,
    provenance,
    quant_tolerance,
    sampled,
    sampled_experts,
    sandbox,
    single_rounding,
    tolerance,
)
from moe_cts.conformance.engine.cases import Case, CaseInputs
from moe_cts.conformance.engine.compare import compare
from moe_cts.conformance.engine.devices import Device, accumulator_profile, waiver_for
from moe_cts.conformance.engine.protocol import FORWARD, VERDICT_STAGE, Implementation
from moe_cts.conformance.engine.results import STAGES, CaseResult, FailKind, Outcome, StageVerdict, worst
from moe_cts.reference import numpy_quant
from moe_cts.reference.errors import NotSupportedError

_NO_OUT = "no out= parameter: unwritten elements show as NaN through torch's NaN fill of uninitialized memory"


class _ImplFailure(Exception):
    def __init__(self, outcome: Outcome, message: str):
        self.outcome = outcome
        super().__init__(message)


class _Session:
    """The oracle's view of one case, and the stage-by-stage run of one implementation against it."""

    def __init__(
        self,
        impl: Implementation,
        case: Case,
        device: Device,
        strict_ties: bool = False,
        inputs: CaseInputs | None = None,  # given: a sub-batch of the case (sampled.py)
        routing: tuple | None = None,  # given: (Routing, e_scores, e_keys), full router (sampled_experts.py)
    ):
        self.impl, self.case, self.device = impl, case, device
        self.strict_ties = strict_ties
        self.impl_name = str(getattr(impl, "name", type(impl).__name__))
        self.declined: list[str] = []  # messages of the NotSupportedErrors the implementation raised
        self.caps = impl.capabilities()
        self.spec = case.spec
        self.inputs: CaseInputs = inputs or case.build_inputs(device.torch_device)
        self.model = tolerance.ErrorModel.for_case(
            accumulator_profile(device), case.dtype, self.caps.fp32_dot
        )
        self.qw = self.inputs.qweights  # quantized cases: codes + scales, base = exact dequantized (float64)
        self.qv = None if self.qw is None else tolerance.WeightViews.of(self.qw.base)
        w = self.inputs.weights if self.qw is None else sampled_experts.router_only(self.inputs.weights)
        self.wv = tolerance.WeightViews.of(w)  # quantized: the router's only (experts judged on qv; issue 15)
        self.x = sandbox.as_np(self.inputs.x)
        self.routing = routing[0] if routing else npo.route(self.spec, self.wv.val, self.x)
        self.e_scores, self.e_keys = (
            routing[1:]
            if routing
            else tolerance.router_bounds(self.model, self.spec, self.wv, self.x, self.routing)
        )
        raw = self.routing.scores
        self.raw_keys = raw + sandbox.as_np(self.wv.val.correction_bias) if self.spec.correction_bias else raw
        self.bad_rows = ~np.isfinite(self.x).all(axis=1) | ~np.isfinite(raw).all(axis=1)
        self.route_ran = False
        self.verdicts: list[StageVerdict] = []
        self.current = "router"
        self.set_ids(self.routing.topk_ids)

    def set_ids(self, ids: np.ndarray) -> None:
        self.ids = ids
        self.tw = tolerance.routing_weights(self.spec, self.routing.scores, ids)
        self.e_w = tolerance.weight_bounds(
            self.model, self.spec, self.routing.scores, self.e_scores, ids, self.tw
        )
        self.kept = npo.permute(self.spec, ids).kept
        self._e2e = self._gu = None  # the oracle on these ids

    def mask(self, extra_dims: int) -> np.ndarray:
        m = ~self.bad_rows
        return m.reshape(m.shape + (1,) * extra_dims)

    def call(self, stage: str, inputs: CaseInputs | None = None, **kw) -> Any:
        try:
            out = self.impl.run(inputs or self.inputs, stage, self.device, **kw)
            sandbox.settle(self.device.torch_device)
            return out
        except sandbox.CaseTimeout:
            raise
        except Exception as err:
            if isinstance(err, NotSupportedError):
                self.declined.append(f"{stage}: {err}")
                raise _ImplFailure(Outcome.NOT_SUPPORTED, f"{stage}: {err}") from err
            known = known_issues.crash_waiver(self.device, self.impl_name, err)
            if known:
                raise _ImplFailure(
                    Outcome.WAIVED, f"{stage}: waived, known limit {known}; raised {sandbox.summary(err)}"
                ) from err
            raise _ImplFailure(Outcome.CRASH, f"{stage}: {sandbox.summary(err)}") from err

    def ids_tensor(self, ids: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(ids)).to(torch.int32).to(self.device.torch_device)

    def rounded(self, a: np.ndarray, dtype: torch.dtype | None = None) -> torch.Tensor:
        return (
            torch.from_numpy(np.ascontiguousarray(a))
            .to(dtype or self.case.torch_dtype)
            .to(self.device.torch_device)
        )

    # -- stages
    def stage_route(self) -> StageVerdict:
        out = self.call("route")
        got_ids, got_w = sandbox.ids_np(out.topk_ids), sandbox.as_np(out.topk_weights)
        T, k = self.ids.shape
        if got_ids.shape != (T, k) or got_w.shape != (T, k):
            return StageVerdict(
                "router",
                Outcome.FAIL,
                fail_kind=FailKind.ROUTING,
                message=f"router: expected ids/weights of shape {(T, k)}, got {got_ids.shape}/{got_w.shape}",
            )
        ref_ids = self.routing.topk_ids
        rows = judge.classify_rows(self.spec, self.raw_keys, self.e_keys, ref_ids, got_ids, self.bad_rows)
        ok = np.array([r not in (judge.ROW_INVALID, judge.ROW_WRONG) for r in rows], bool)
        accepted = np.where(ok[:, None], got_ids, ref_ids)
        self.set_ids(accepted)
        self.route_ran = True
        declared = self.caps.router_weights_dtype
        wrong_dtype = judge.weights_dtype_mismatch(out.topk_weights, declared, self.case.dtype)
        if wrong_dtype:
            return StageVerdict("router", Outcome.FAIL, fail_kind=FailKind.NUMERIC, message=wrong_dtype)
        want, bound = self.tw, self.e_w
        if declared == "input":  # weights stored in the case dtype: the oracle's rounded the same way
            want = sandbox.as_np(self.rounded(self.tw))
            bound = tolerance.stored_weight_bounds(self.model, self.tw, self.e_w)
        cmp = judge.compare_weights(got_w, got_ids, want, accepted, bound, ok & ~self.bad_rows)
        verdict = judge.routing_verdict(self.spec, rows, got_ids, ref_ids, self.raw_keys, cmp)
        return judge.strict_tie_verdict(verdict) if self.strict_ties else verdict

    def stage_permute(self) -> StageVerdict:
        out = self.call("permute", self.inputs.with_feeds(topk_ids=self.ids_tensor(self.ids)))
        return judge.permutation_verdict(npo.permute(self.spec, self.ids), out)

    def gate_up_bounds(self):
        """(GateUp, e_act) of x on the current ids, computed once: stage gemm1's and end to end's."""
        if self._gu is None:
            m, spec, x, ids = self.model, self.spec, self.x, self.ids
            self._gu = (tolerance.gate_up_bounds(m, spec, self.wv, x, ids) if self.qw is None
                        else quant_tolerance.gate_up_bounds(m, spec, self.qw, self.qv, x, ids))  # fmt: skip
        return self._gu

    def stage_gate_up(self) -> StageVerdict:
        ref, e_act = self.gate_up_bounds()
        out = self.call("gate_up", self.inputs.with_feeds(topk_ids=self.ids_tensor(self.ids)))
        return self.numeric(
            "gemm1", sandbox.field_of(out, "act"), ref.act, e_act, self.kept[..., None] & self.mask(2)
        )

    def stage_down(self) -> StageVerdict:
        # float: gate_up_bounds's reference is this same npo.gate_up(spec, wv.val, x, ids) call
        qw = self.qw
        oracle = (
            self.gate_up_bounds()[0] if qw is None else numpy_quant.gate_up(self.spec, qw, self.x, self.ids)
        )
        act = self.rounded(oracle.act)
        if self.qw is not None:
            ref, e_eo = quant_tolerance.down_bounds(
                self.model, self.spec, self.qw, self.qv, sandbox.as_np(act), self.ids
            )
        else:
            ref, e_eo = tolerance.down_bounds(self.model, self.spec, self.wv, sandbox.as_np(act), self.ids)
        out = self.call("down", self.inputs.with_feeds(topk_ids=self.ids_tensor(self.ids), act=act))
        return self.numeric("gemm2", out, ref, e_eo, self.kept[..., None] & self.mask(2))

    def stage_combine(self) -> StageVerdict:
        e2e = self.end_to_end_reference()
        eo, tw = self.rounded(e2e["eo"]), self.rounded(self.tw, torch.float32)
        so = self.rounded(e2e["so"]) if self.spec.shared_width else None
        kept = torch.from_numpy(self.kept).to(self.device.torch_device)
        ref, e_y = tolerance.combine_bounds(
            self.model,
            self.spec,
            sandbox.as_np(eo),
            sandbox.as_np(tw),
            self.kept,
            None if so is None else sandbox.as_np(so),
        )
        feeds = self.inputs.with_feeds(
            expert_out=eo, topk_weights=tw, kept=kept, shared_out=so, topk_ids=self.ids_tensor(self.ids)
        )
        return self.numeric("combine", self.call("combine", feeds), ref, e_y, self.mask(1))

    def end_to_end_reference(self) -> dict[str, np.ndarray]:
        if self._e2e is None and self.qw is not None:
            self._e2e = quant_tolerance.end_to_end(self.model, self.spec, self.qw, self.qv, self.x, self.ids,
                                                   self.tw, self.kept, self.e_w, self.gate_up_bounds())  # fmt: skip
        if self._e2e is None:
            m, spec, wv = self.model, self.spec, self.wv
            gu, e_act = self.gate_up_bounds()
            eo, e_eo = tolerance.down_bounds(m, spec, wv, gu.act, self.ids, e_act)
            so, e_so = tolerance.shared_bounds(m, spec, wv, self.x)
            y, e_y = tolerance.combine_bounds(
                m, spec, eo, self.tw, self.kept, so if spec.shared_width else None, e_eo, self.e_w, e_so
            )
            self._e2e = {"eo": eo, "so": so, "y": y, "e_y": e_y}
        return self._e2e

    def numeric(
        self, stage: str, got: Any, want: np.ndarray, bound: np.ndarray, mask: np.ndarray
    ) -> StageVerdict:
        g = sandbox.as_np(got)
        if g.shape != want.shape:
            return StageVerdict(
                stage,
                Outcome.FAIL,
                fail_kind=FailKind.NUMERIC,
                message=f"{stage}: expected shape {want.shape}, got {g.shape}",
            )
        want = self.stored(want)
        return judge.numeric_verdict(stage, compare(g, want, bound, mask=mask, floor=self.model.tiny))

    def stored(self, want: np.ndarray) -> np.ndarray:
        """What a stage output stored in the case dtype can hold: past the dtype's largest finite value (plus
        half its last step) round-to-nearest gives +-inf, so that is the expected value there (an expert output
        of 2e5 stored in fp16 is inf; docs/bugs.md#bug-15-fp16-overflow-and-tiny-scales)."""
        if self.case.dtype == "float32" or not np.isfinite(want).any():
            return want
        over = torch.from_numpy(np.nan_to_num(want, nan=0.0)).to(self.case.torch_dtype).isinf().numpy()
        return np.where(over & np.isfinite(want), np.copysign(np.inf, want), want)

    def stage_forward(self) -> list[StageVerdict]:
        T, H = self.x.shape
        poisoned = None
        if self.caps.accepts_out:
            poisoned = sandbox.PoisonedOutput.make(T, H, self.case.torch_dtype, self.device.torch_device)
            y = sandbox.field_of(self.call(FORWARD, out=poisoned.out), "y")
        else:
            with sandbox.nan_fill_uninitialized():
                y = sandbox.field_of(self.call(FORWARD), "y")
        e2e = self.end_to_end_reference()
        mask = self.mask(1)
        if not self.route_ran:  # the forward's own choice on a tie is unknown: do not judge those rows
            amb = judge.ambiguous_rows(self.spec, self.raw_keys, self.e_keys, self.routing.topk_ids)
            if self.strict_ties:  # exact ties follow the lower-id rule: only near ties stay unjudged
                ids = self.routing.topk_ids
                exact = judge.ambiguous_rows(self.spec, self.raw_keys, 0 * self.e_keys, ids)
                amb &= ~exact
            mask = mask & ~amb[:, None]
        verdicts = []
        if poisoned is not None:
            mem = self.memory_verdict(poisoned, y)
            mask = mask & ~poisoned.unwritten()
            verdicts.append(mem)
        else:
            verdicts.append(StageVerdict("memory", Outcome.NOT_SUPPORTED, message=_NO_OUT))
        verdicts.insert(
            0, self.single_rounding(self.numeric("end_to_end", y, e2e["y"], e2e["e_y"], mask), y, mask)
        )
        verdicts.append(self.determinism_verdict(y))
        return verdicts

    def single_rounding(self, v: StageVerdict, y: torch.Tensor, mask: np.ndarray) -> StageVerdict:
        """Tighten end_to_end for implementations claiming weight_before_cast (engine/single_rounding.py)."""
        checked = (
            single_rounding.forward_check(self, sandbox.as_np(y), mask) if v.outcome.conformant else None
        )
        if checked is None:
            return v
        ok, msg = checked
        if ok:
            return dataclasses.replace(v, message=f"{v.message}; {msg}")
        return dataclasses.replace(
            v, outcome=Outcome.FAIL, fail_kind=FailKind.NUMERIC, message=f"end_to_end: {msg}"
        )

    def memory_verdict(self, p: sandbox.PoisonedOutput, y: torch.Tensor) -> StageVerdict:
        unwritten, canaries = p.unwritten(), p.canaries_changed()
        same = y.data_ptr() == p.out.data_ptr()
        if canaries:
            msg = f"memory: {canaries} canary elements around the output were overwritten (write outside out)"
        elif unwritten.any():
            rows = np.flatnonzero(unwritten.any(axis=1))
            msg = f"memory: {int(unwritten.sum())} output elements never written (rows {rows[:8].tolist()})"
            if not same:
                msg += "; the implementation returned a different tensor than out="
        else:
            return StageVerdict(
                "memory", Outcome.PASS, message="memory: every element written, canaries intact"
            )
        return StageVerdict("memory", Outcome.FAIL, fail_kind=FailKind.MEMORY, message=msg)

    def determinism_verdict(self, y: torch.Tensor) -> StageVerdict:
        msgs = []
        if self.caps.deterministic:
            y2 = sandbox.field_of(self.call(FORWARD), "y")
            diff = int((sandbox.bits(y) != sandbox.bits(y2)).sum())
            if diff:
                msgs.append(f"two runs differ in {diff} elements")
        if self.caps.batch_invariant:
            for label, rows in invariance.batch_variants(self.x.shape[0]):
                sub = CaseInputs(
                    spec=self.spec,
                    x=self.inputs.x[rows.to(self.inputs.x.device)].clone(),
                    weights=self.inputs.weights,
                    qweights=self.inputs.qweights,
                )
                y_sub = sandbox.field_of(self.call(FORWARD, sub), "y")
                diff = int((sandbox.bits(y[rows.to(y.device)]) != sandbox.bits(y_sub)).sum())
                if diff:
                    msgs.append(f"{label}: differs from the same tokens in the full batch in {diff} elements")
        wrong_table = provenance.check(self.impl.kernel_config() or {}, self.device)
        msgs += [wrong_table] if wrong_table else []
        if not (self.caps.deterministic or self.caps.batch_invariant or msgs):
            return StageVerdict("determinism", Outcome.NOT_SUPPORTED, message="no determinism claimed")
        if msgs:
            return StageVerdict(
                "determinism",
                Outcome.FAIL,
                fail_kind=FailKind.DETERMINISM,
                message="determinism: " + "; ".join(msgs),
            )
        return StageVerdict("determinism", Outcome.PASS, message="determinism: bitwise equal")

    def run(self) -> list[StageVerdict]:
        verdicts = self.verdicts = []  # kept on the session so a timeout keeps the finished stages
        plan = [
            ("route", self.stage_route),
            ("permute", self.stage_permute),
            ("gate_up", self.stage_gate_up),
            ("down", self.stage_down),
            ("combine", self.stage_combine),
        ]
        for stage, fn in plan:
            self.current = VERDICT_STAGE[stage]
            verdicts.append(self.guarded(stage, fn))
        self.current = "end_to_end"
        if FORWARD in self.caps.stages:
            try:
                verdicts.extend(self.stage_forward())
            except _ImplFailure as f:
                verdicts.append(StageVerdict("end_to_end", f.outcome, message=str(f)))
        else:
            verdicts.append(StageVerdict("end_to_end", Outcome.NOT_SUPPORTED, message="forward not exposed"))
        return verdicts

    def guarded(self, stage: str, fn) -> StageVerdict:
        name = VERDICT_STAGE[stage]
        if stage not in self.caps.stages:
            return StageVerdict(name, Outcome.NOT_SUPPORTED, message=f"{stage}: stage not exposed")
        try:
            return fn()
        except _ImplFailure as f:
            return StageVerdict(name, f.outcome, message=str(f))


# ----------------------------------------------------------------------------------------------- entry point
def _failing_stage(verdicts: list[StageVerdict]) -> str | None:
    """First stage in pipeline order that is not conformant; else the first with a warning."""
    ordered = sorted(verdicts, key=lambda v: STAGES.index(v.stage))
    bad = [v for v in ordered if not v.outcome.conformant]
    warn = [v for v in ordered if v.outcome in (Outcome.QUALITY_WARNING, Outcome.COMPATIBILITY_WARNING)]
    return (bad or warn)[0].stage if (bad or warn) else None


def _first_message(verdicts: list[StageVerdict]) -> str:
    failing = _failing_stage(verdicts)
    return next((v.message for v in verdicts if v.stage == failing), "") if failing else ""


def run_case(
    impl: Implementation,
    case: Case,
    device: Device,
    *,
    timeout_s: float | None = None,
    strict_ties: bool = False,
    inputs: CaseInputs | None = None,  # the case's inputs already built on this device (the soak lane's)
) -> CaseResult:
    """Run and judge one case; never raises for the implementation's errors (module docstring)."""
    t0 = time.perf_counter()
    name = getattr(impl, "name", type(impl).__name__)
    meta = {"case_id": case.case_id, "params": case.params(), "impl": name, "device": str(device)}

    def result(outcome: Outcome, verdicts=(), message: str = "", failing: str | None = None) -> CaseResult:
        cfg: dict[str, Any] = {}
        with contextlib.suppress(Exception):
            cfg = dict(impl.kernel_config() or {})
        return CaseResult(
            outcome=outcome,
            stages=tuple(verdicts),
            failing_stage=failing,
            kernel_config=cfg,
            duration_s=time.perf_counter() - t0,
            message=message,
            **meta,
        )

    try:
        reason = waiver_for(device, case)
        if reason:
            return result(Outcome.WAIVED, message=reason)
        why = impl.capabilities().unsupported_case(case)
        if why:
            return result(Outcome.NOT_SUPPORTED, message=why)
        experts = sampled_experts.needs_expert_sampling(case)  # past the host: the oracle on touched experts
        if experts or sampled.needs_sampling(case):  # past the host judge: whole batch on the device
            session = None
        else:
            with np.errstate(all="ignore"):  # NaN/inf rows are expected; they are judged by placement
                session = _Session(impl, case, device, strict_ties, inputs)
    except Exception as err:
        return result(Outcome.INTERNAL_ERROR, message=f"harness: {sandbox.summary(err)}")
    verdicts: list[StageVerdict] = []
    try:
        with sandbox.deadline(timeout_s), np.errstate(all="ignore"):
            if session is None:
                run = sampled_experts.run_sampled_experts if experts else sampled.run_sampled
                verdicts = run(_Session, impl, case, device, strict_ties)
                return result(worst(v.outcome for v in verdicts), verdicts,
                              _first_message(verdicts), _failing_stage(verdicts))  # fmt: skip
            verdicts = session.run()
    except sandbox.CaseTimeout:
        verdicts = list(session.verdicts) if session else []
        current = session.current if session else "end_to_end"
        verdicts.append(StageVerdict(current, Outcome.TIMEOUT, message=f"exceeded {timeout_s} s"))
        return result(Outcome.TIMEOUT, verdicts, f"timeout after {timeout_s} s in {current}", current)
    except Exception as err:
        return result(Outcome.INTERNAL_ERROR, verdicts, f"harness: {sandbox.summary(err)}")
    outcome = worst(v.outcome for v in verdicts)
    failing = _failing_stage(verdicts)
    msg = next((v.message for v in verdicts if v.stage == failing), "") if failing else ""
    outcome, msg = _explain(session, verdicts, outcome, msg)
    return result(outcome, verdicts, msg, failing)


def _explain(
    session: _Session, verdicts: list[StageVerdict], outcome: Outcome, msg: str
) -> tuple[Outcome, str]:
    """A waived stage makes a conformant case Waived (never Pass); a case the implementation declined keeps
    the implementation's own reason; a Fail on a device with a silent known limit names the limit.

    A case whose end_to_end the implementation declined (it raised NotSupportedError for the forward: an
    e4m3fnuz case on CUDA) is NotSupported as a whole even when its router stage passed: the stages that
    carry the case's point (the quantized GEMMs) never ran, so the case must not count as executed."""
    waived = [v for v in verdicts if v.outcome == Outcome.WAIVED]
    if waived and outcome.conformant:
        return Outcome.WAIVED, waived[0].message
    e2e = next((v for v in verdicts if v.stage == "end_to_end"), None)
    if outcome.conformant and session.declined and e2e is not None and e2e.outcome == Outcome.NOT_SUPPORTED:
        return Outcome.NOT_SUPPORTED, session.declined[0]
    if outcome == Outcome.NOT_SUPPORTED and not msg:
        return outcome, (session.declined or [next((v.message for v in verdicts if v.message), "")])[0]
    if outcome == Outcome.FAIL:
        waiver = known_issues.fail_waiver(session.device, session.impl_name, session.case)
        if waiver:  # the device cannot compute this case right for this implementation: Waived, never Pass
            for i, v in enumerate(verdicts):
                if v.outcome == Outcome.FAIL:
                    verdicts[i] = dataclasses.replace(v, outcome=Outcome.WAIVED,
                                                      message=f"{v.message} (waived, known limit {waiver})")  # fmt: skip
            return Outcome.WAIVED, f"{msg} (waived, known limit {waiver})"
        note = known_issues.fail_note(session.device, session.impl_name, session.case)
        if note:
            msg = f"{msg} (known limit of this device may apply: {note})"
    return outcome, msg
