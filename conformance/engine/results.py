"""Result taxonomy of moe-cts: what one case, and one stage of a case, can end as.

outcome                 meaning                                                         conformant?
pass                    every check inside its bound                                     yes
quality_warning         inside the bound, but the RMS or signed-bias check failed         yes (flagged)
compatibility_warning   implementation-defined difference (e.g. choice on an exact tie)   yes (flagged)
not_supported           the implementation does not claim this capability                 yes (not counted)
waived                  the device matrix waives it, with a reason                        yes (not counted)
fail                    numeric, routing, memory or determinism failure                   no
crash                   the case killed its process (segfault, illegal memory access)     no
timeout                 the case exceeded its time limit                                  no
internal_error          the harness or the oracle failed: voids the run                   void
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field
from typing import Any


class Outcome(str, enum.Enum):
    PASS = "pass"
    QUALITY_WARNING = "quality_warning"
    COMPATIBILITY_WARNING = "compatibility_warning"
    NOT_SUPPORTED = "not_supported"
    WAIVED = "waived"
    FAIL = "fail"
    CRASH = "crash"
    TIMEOUT = "timeout"
    INTERNAL_ERROR = "internal_error"

    @property
    def conformant(self) -> bool:
        return self in CONFORMANT

    @property
    def severity(self) -> int:
        """Order for combining stage outcomes into a case outcome: the worst wins."""
        return _SEVERITY[self]


CONFORMANT = frozenset(
    {
        Outcome.PASS,
        Outcome.QUALITY_WARNING,
        Outcome.COMPATIBILITY_WARNING,
        Outcome.NOT_SUPPORTED,
        Outcome.WAIVED,
    }
)
_SEVERITY = {
    Outcome.NOT_SUPPORTED: 0,
    Outcome.WAIVED: 0,
    Outcome.PASS: 1,
    Outcome.COMPATIBILITY_WARNING: 2,
    Outcome.QUALITY_WARNING: 3,
    Outcome.FAIL: 4,
    Outcome.TIMEOUT: 5,
    Outcome.CRASH: 6,
    Outcome.INTERNAL_ERROR: 7,
}

#: Stages in pipeline order; a failure names the first stage that deviates.
STAGES = ("router", "permutation", "gemm1", "gemm2", "combine", "end_to_end", "memory", "determinism")


class FailKind(str, enum.Enum):
    NUMERIC = "numeric"
    ROUTING = "routing"
    MEMORY = "memory"
    DETERMINISM = "determinism"


def worst(outcomes) -> Outcome:
    outcomes = list(outcomes)
    return max(outcomes, key=lambda o: o.severity) if outcomes else Outcome.PASS


@dataclass(frozen=True)
class StageVerdict:
    stage: str  # one of STAGES
    outcome: Outcome
    max_ratio: float | None = None  # max over elements of |err| / bound
    p99_ratio: float | None = None  # 99th percentile of |err| / bound
    rms_ratio: float | None = None  # RMS error / expected RMS error
    bias_z: float | None = None  # signed mean error in units of its standard error
    fail_kind: FailKind | None = None
    message: str = ""  # one line: what deviated and where
    worst: tuple[dict[str, Any], ...] = ()  # worst elements: index, got, want, bound, ratio

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["outcome"] = self.outcome.value
        d["fail_kind"] = self.fail_kind.value if self.fail_kind else None
        d["worst"] = list(self.worst)
        return d


@dataclass(frozen=True)
class CaseResult:
    case_id: str  # replays the case bit for bit (moe_cts.conformance.engine.cases.Case.from_id)
    outcome: Outcome
    stages: tuple[StageVerdict, ...] = ()
    failing_stage: str | None = None  # first stage (pipeline order) whose outcome is not conformant
    params: dict[str, Any] = field(default_factory=dict)  # the case's parameters, for reports
    kernel_config: dict[str, Any] = field(default_factory=dict)  # tile config the implementation used
    duration_s: float = 0.0
    message: str = ""
    impl: str = ""
    device: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "case_id": self.case_id,
            "outcome": self.outcome.value,
            "failing_stage": self.failing_stage,
            "stages": [s.to_json() for s in self.stages],
            "params": self.params,
            "kernel_config": self.kernel_config,
            "duration_s": self.duration_s,
            "message": self.message,
            "impl": self.impl,
            "device": self.device,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> CaseResult:
        stages = tuple(
            StageVerdict(
                **{
                    **s,
                    "outcome": Outcome(s["outcome"]),
                    "fail_kind": FailKind(s["fail_kind"]) if s.get("fail_kind") else None,
                    "worst": tuple(s.get("worst", ())),
                }
            )
            for s in d.get("stages", ())
        )
        return cls(
            case_id=d["case_id"],
            outcome=Outcome(d["outcome"]),
            stages=stages,
            failing_stage=d.get("failing_stage"),
            params=d.get("params", {}),
            kernel_config=d.get("kernel_config", {}),
            duration_s=d.get("duration_s", 0.0),
            message=d.get("message", ""),
            impl=d.get("impl", ""),
            device=d.get("device", ""),
        )
