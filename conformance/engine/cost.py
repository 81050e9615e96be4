"""A rough cost of one case, to start the longest cases first (harness/schedule.py): on a certify run the
case that starts last should not be the one that takes longest (issue 15: the 216 s quantized DeepSeek-V3
case was the critical path of a 278 s run, and it came after every quick case in the list).

    case_cost(case) -> float     about seconds on the H200 host of docs/h200.md (a ranking, not a promise)

    term               what it stands for                                   H200 session 4 (10 workers)
    BASE_S             compile, launches, the small oracle                   small cases: 6-9 s
    weights / W_RATE   float64 views and oracle passes over every expert     deepseek-v3-width (0.7 G): 115 s
                       weight: E (w13_rows H + H I) + the shared MLP         mixtral-8x7b-full (1.4 G): 143 s
    x QUANT_FACTOR     quantized: dequantization and the flip bounds        quant-...-width (0.7 G): 216 s
    QUANT_BASE_S       quantized kernels compile more variants              tile-fp8-*: 7-36 s
    products / P_RATE  T k (w13_rows H + H I): the oracle's GEMMs and bounds deepseek-v2-lite-width: 67 s
    sampled: tokens    T H / X_RATE: the whole batch's inputs and output    int32-offsets (T = 310000): 118 s
                       (sampled.py; its oracle runs on a few rows only)

Generated cases are drawn inside a test, so a generated batch costs GENERATED_CASE_S per case it draws.
"""

from __future__ import annotations

from moe_cts.conformance.engine import sampled
from moe_cts.conformance.engine.cases import Case

BASE_S, QUANT_BASE_S = 6.0, 15.0
W_RATE, P_RATE, X_RATE = 1.0e7, 1.0e9, 2.0e7
QUANT_FACTOR = 3.0
GENERATED_CASE_S = 2.1  # 390 s over 185 generated cases in session 4


def case_cost(case: Case) -> float:
    """Estimated seconds of one must-pass case (module docstring)."""
    s, T = case.spec, case.num_tokens
    per_expert = s.w13_rows * s.hidden_size + s.hidden_size * s.intermediate_size
    shared = 3 * s.shared_width * s.hidden_size
    weights = s.num_experts * per_expert + shared
    if sampled.needs_sampling(case):  # the oracle on sampled rows; the whole batch on the host once
        return BASE_S + weights / W_RATE + T * s.hidden_size / X_RATE
    cost = weights / W_RATE + T * s.top_k * per_expert / P_RATE
    if s.quant is not None:
        return BASE_S + QUANT_BASE_S + QUANT_FACTOR * cost
    return BASE_S + cost
