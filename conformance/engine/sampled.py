"""Cases too large for the float64 host judge: the implementation runs the whole batch on the device, the
judge checks every row for NaN/inf and a sample of rows against the oracle (docs/bugs.md#bug-01-int32-address-overflow).

A case whose address math passes 2^31 (T*H or T*k*I elements) needs ~17 GB per float64 (T, k, H) array on
the host. Tokens are independent (no capacity dropping), so the oracle of x[rows] is the oracle's rows:

    y = impl.forward(x[, out=poisoned])          whole batch, on the device (NaN-filled fresh memory, a
                                                 NaN-poisoned out= with canaries where accepted)
    memory = rows of y with NaN/inf where x is finite, changed canaries   -> memory Fail (an int32 offset
                                                 that wrapped writes other rows, or none)
    s = the runner's session on x[rows]          rows = sample_rows(case): the first and last 16 rows,
                                                 16 rows either side of each 2^31 crossing, 32 at random
    end_to_end = compare(y[rows], s's oracle)    the usual bound, tie rows masked as for a forward

    needs_sampling(case) -> bool                 T*k*max(H, I) above SAMPLE_ABOVE elements
    run_sampled(impl, case, device, strict_ties) -> list[StageVerdict]
    whole_batch(impl, inputs, case, device) -> (y | None, verdicts)     the forward and the memory check
                                                 (also sampled_experts.py's: experts too large for the host)

Only the end_to_end stage is judged (the staged path would hold T*k*H float64 intermediates).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from moe_cts.conformance.engine import judge, sandbox
from moe_cts.conformance.engine.cases import Case, CaseInputs
from moe_cts.conformance.engine.devices import Device
from moe_cts.conformance.engine.protocol import FORWARD
from moe_cts.conformance.engine.results import FailKind, Outcome, StageVerdict
from moe_cts.reference.errors import NotSupportedError

#: T*k*max(H, I) above this: sampled judging (2^28 elements: 2 GB per float64 (T, k, H) array)
SAMPLE_ABOVE = 2**28
INT32_LIMIT = 2**31
EDGE_ROWS, RANDOM_ROWS = 16, 32


def needs_sampling(case: Case) -> bool:
    s = case.spec
    return case.num_tokens * s.top_k * max(s.hidden_size, s.intermediate_size) > SAMPLE_ABOVE


def sample_rows(case: Case) -> np.ndarray:
    """Sorted distinct token rows: both ends, either side of the first token whose x/y offset (t*H) or
    activation offset (t*k*I) passes 2^31, and a seeded random draw."""
    T, s = case.num_tokens, case.spec
    rows = {*range(min(EDGE_ROWS, T)), *range(max(0, T - EDGE_ROWS), T)}
    for per_token in (s.hidden_size, s.top_k * s.intermediate_size, s.top_k * s.hidden_size):
        cross = -(-INT32_LIMIT // per_token)
        if cross < T:
            rows |= set(range(max(0, cross - EDGE_ROWS), min(T, cross + EDGE_ROWS)))
    rng = np.random.default_rng(case.seed)
    rows |= set(rng.choice(T, size=min(RANDOM_ROWS, T), replace=False).tolist())
    return np.array(sorted(rows), dtype=np.int64)


def run_sampled(session_cls, impl, case: Case, device: Device, strict_ties: bool) -> list[StageVerdict]:
    """The forward on the whole batch, judged on sample_rows (module docstring). session_cls: the
    runner's session (its oracle and bounds on given inputs)."""
    if case.spec.capacity_factor is not None:  # dropping depends on the whole batch: rows are not independent
        raise ValueError("sampled judging: capacity_factor makes rows depend on each other")
    inputs = case.build_inputs(device.torch_device)
    y, verdicts = whole_batch(impl, inputs, case, device)
    if y is None:
        return verdicts
    rows = torch.from_numpy(sample_rows(case))
    x_rows = inputs.x[rows.to(inputs.x.device)].clone()
    sub = CaseInputs(spec=inputs.spec, x=x_rows, weights=inputs.weights, qweights=inputs.qweights)
    del inputs
    s = session_cls(impl, case, device, strict_ties, inputs=sub)
    e2e = s.end_to_end_reference()
    amb = judge.ambiguous_rows(s.spec, s.routing.keys, s.e_keys, s.routing.topk_ids)
    if strict_ties:
        amb &= ~judge.ambiguous_rows(s.spec, s.routing.keys, 0 * s.e_keys, s.routing.topk_ids)
    got = y[rows.to(y.device)]
    v = s.numeric("end_to_end", got, e2e["y"], e2e["e_y"], s.mask(1) & ~amb[:, None])
    note = f" (sampled: {len(rows)} of {case.num_tokens} rows; worst indices count sampled rows)"
    return [dataclasses.replace(v, message=v.message + note), *verdicts]


def whole_batch(impl, inputs: CaseInputs, case: Case, device: Device):
    """(y, [memory verdict]) of the implementation's forward on the whole batch, or (None, [its NotSupported
    or Crash verdict])."""
    poisoned = None
    if impl.capabilities().accepts_out:  # NaN poison (its bits) and canaries either side, as the runner's
        T, H = inputs.x.shape
        poisoned = sandbox.PoisonedOutput.make(T, H, case.torch_dtype, device.torch_device)
    try:
        with sandbox.nan_fill_uninitialized():
            kw = {} if poisoned is None else {"out": poisoned.out}
            y = sandbox.field_of(impl.run(inputs, FORWARD, device, **kw), "y")
            sandbox.settle(device.torch_device)
    except sandbox.CaseTimeout:
        raise
    except NotSupportedError as err:
        return None, [StageVerdict("end_to_end", Outcome.NOT_SUPPORTED, message=f"forward: {err}")]
    except Exception as err:  # the implementation's error, as the runner's call() reports it
        return None, [StageVerdict("end_to_end", Outcome.CRASH, message=f"forward: {sandbox.summary(err)}")]
    return y, [_unwritten_verdict(inputs.x, y, poisoned.canaries_changed() if poisoned else 0)]


def _unwritten_verdict(x: torch.Tensor, y: torch.Tensor, canaries: int) -> StageVerdict:
    """Rows of the whole batch with NaN/inf where x is finite (the poison is a NaN), and changed canaries."""
    bad = (~torch.isfinite(y).all(dim=1)) & torch.isfinite(x).all(dim=1)
    n = int(bad.sum())
    if n == 0 and canaries == 0:
        return StageVerdict("memory", Outcome.PASS, message="memory: every row finite (whole batch)")
    first = torch.nonzero(bad)[:8, 0].tolist()
    msg = f"memory: {n} rows of the whole batch hold NaN/inf where x is finite (rows {first})"
    msg += f"; {canaries} canary elements beside the output changed" if canaries else ""
    return StageVerdict("memory", Outcome.FAIL, fail_kind=FailKind.MEMORY, message=msg)
