"""The fault catalog: data/faults.json, one entry per injected fault, each tied to a bug class of docs/bugs.md.

    load_catalog() -> Catalog                 parsed and checked; ValueError naming the entry and field
    catalog.runnable(profile, device)         faults a recall run of that profile on that device executes
    catalog.cases_for(fault, profile, backend, cap, arch)   named cases first, then must-pass cases up to cap

A fault is one of:

    kind       what is injected                                            fields
    mutation   exact text replacement(s) in a scratch copy of kernels/     edits: [{file, old, new}]
    broken     a deliberately broken implementation (impls/broken.py)     broken: its BROKEN name
    config     a mutation whose stage is `compile`: judged by the shared-memory check of every table entry

Each entry names: bug (docs/bugs.md anchor), reference (public thread), stage and outcome expected to catch it,
profile (smoke | quick | gpu) and device (interpreter | gpu) where it must be caught, checks (what sees it),
cases (names from `cases` of the catalog or of data/must_pass.json), impl (options of the Triton
implementation, e.g. batch_invariant), env (environment variables set while the fault's cases and their control
run: the opt-in kernel paths, MOE_CTS_MXFP4_DECODE=swapped or a tile table MOE_CTS_TABLE=data:NAME, a file of
conformance/data/), fill (false: run only the named cases) and missing_check: non-empty when the suite is known to lack the check
that would catch the fault (the entry then documents the gap; a kill means the note is out of date).
`old` / `new` may be a string or a list of lines (joined with newlines), so multi-line snippets stay readable.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from moe_cts.conformance.engine.cases import Case
from moe_cts.conformance.engine.environ import setenv
from moe_cts.conformance.engine.must_pass import must_pass_cases, must_pass_for
from moe_cts.conformance.engine.results import STAGES, Outcome
from moe_cts.conformance.engine.tile_cases import tile_cases

CATALOG_PATH = Path(__file__).parents[1] / "data" / "faults.json"
KINDS = ("mutation", "broken", "config")
PROFILES = ("smoke", "quick", "gpu")
DEVICES = ("interpreter", "gpu")
#: A recall run of profile P runs the faults of every profile up to P (smoke faults run in quick too).
PROFILE_ORDER = {"smoke": ("smoke",), "quick": ("smoke", "quick"), "full": ("smoke", "quick"),
                 "gpu": ("smoke", "quick", "gpu")}  # fmt: skip
STAGE_NAMES = (*STAGES, "compile")


@dataclass(frozen=True)
class Edit:
    file: str  # path inside kernels/, e.g. "_router_kernels.py" or "configs/hip.json"
    old: str  # must occur exactly once in the file (a stale entry is reported, never skipped)
    new: str


@dataclass(frozen=True)
class Fault:
    name: str  # unique, kebab-case
    bug: str  # docs/bugs.md anchor, e.g. "bug-05-routed-scaling-factor"
    reference: str  # public thread, or "" when docs/bugs.md records none
    kind: str  # one of KINDS
    stage: str  # verdict stage that must catch it (STAGES, or "compile")
    outcome: Outcome  # outcome it must get there (fail; compatibility_warning for tie rules)
    profile: str  # one of PROFILES
    device: str  # one of DEVICES
    checks: str  # the checks that see it, in words
    note: str = ""  # what the injected bug does
    cases: tuple[str, ...] = ()  # exposing cases, by name, run first
    edits: tuple[Edit, ...] = ()  # mutation / config
    broken: str = ""  # broken: name in moe_cts.conformance.impls.broken.BROKEN
    impl: dict[str, Any] = field(default_factory=dict)  # TritonImplementation options
    missing_check: str = ""  # the suite's known gap that lets this fault survive
    fill: bool = True  # False: only its own cases (the fault is about one input, e.g. fp16 overflow)
    #: environment of the fault's cases and their control (values "data:NAME" resolved to conformance/data/NAME):
    #: how a fault reaches a kernel path the defaults do not take (an opt-in decode, a tile table's flag)
    env: tuple[tuple[str, str], ...] = ()

    @property
    def impl_key(self) -> str:
        """The implementation a control run of this fault's cases uses (its options and environment)."""
        if self.kind == "broken":
            return "torch-eager"
        opts = ",".join(f"{k}={v}" for k, v in [*sorted(self.impl.items()), *self.env])
        return f"triton[{opts}]" if opts else "triton"


@dataclass(frozen=True)
class Catalog:
    version: str
    faults: tuple[Fault, ...]
    cases: dict[str, Case]  # the catalog's own exposing cases, by name
    not_applicable: tuple[dict[str, str], ...]  # bug classes without a fault here, and why

    def by_name(self, names: list[str]) -> list[Fault]:
        known = {f.name: f for f in self.faults}
        missing = [n for n in names if n not in known]
        if missing:
            raise ValueError(f"faults: expected names from data/faults.json, unknown {missing}")
        return [known[n] for n in names]

    def runnable(self, profile: str, device: str) -> list[Fault]:
        """Faults of the profiles up to `profile` that can be caught on `device` (gpu faults need a GPU)."""
        profiles = PROFILE_ORDER[profile]
        return [
            f for f in self.faults if f.profile in profiles and (device == "gpu" or f.device == "interpreter")
        ]

    def case(self, name: str) -> Case:
        if name in self.cases:
            return self.cases[name]
        found = _must_pass_by_name().get(name)
        if found is None:
            raise ValueError(
                f"case: expected a name from faults.json `cases` or must_pass.json, got {name!r}"
            )
        return found

    def cases_for(
        self, fault: Fault, profile: str, backend: str, cap: int, arch: str | None = None
    ) -> list[Case]:
        """The fault's exposing cases, then the profile's must-pass cases up to `cap` in all (no repeats).
        A broken implementation's own exposing case (BROKEN[name].case) comes first for that kind. `arch`
        (torch's name, "sm_90") picks the tile cases of the table that device reads, as certify does."""
        out: list[Case] = []
        if fault.kind == "broken":
            from moe_cts.conformance.impls.broken import BROKEN

            out.append(dataclasses.replace(BROKEN[fault.broken].case, name=f"broken:{fault.broken}"))
        out += [self.case(n) for n in fault.cases]
        if fault.kind == "config" or not fault.fill:
            return out
        # under a fault's tile table the tile cases are that table's rows (engine/tile_cases.py reads the env)
        with environment(fault.env):
            mp = must_pass_for("quick" if profile == "gpu" else profile, backend, arch)
        seen = {c.case_id for c in out}
        for c in mp:
            if len(out) >= max(cap, len(fault.cases) + (fault.kind == "broken")):
                break
            if c.case_id not in seen:
                out.append(c)
                seen.add(c.case_id)
        return out


def environment(env: tuple[tuple[str, str], ...]) -> contextlib.AbstractContextManager[None]:
    """os.environ with a fault's variables set (restored after): its cases and their control run under it."""
    return setenv(dict(env))


@functools.cache
def _must_pass_by_name() -> dict[str, Case]:
    """Must-pass cases by name, and the tile-table cases of the interpreter (engine/tile_cases.py)."""
    return {c.name: c for c in [*must_pass_cases(), *tile_cases("interpreter")]}


def _text(v: Any, where: str) -> str:
    if isinstance(v, list) and all(isinstance(s, str) for s in v):
        return "\n".join(v)
    if isinstance(v, str):
        return v
    raise ValueError(f"{where}: expected a string or a list of lines, got {type(v).__name__}")


def _choice(d: dict[str, Any], key: str, allowed: tuple[str, ...], where: str) -> str:
    v = d.get(key)
    if v not in allowed:
        raise ValueError(f"{where}.{key}: expected one of {allowed}, got {v!r}")
    return v


def parse_fault(d: dict[str, Any]) -> Fault:
    """One catalog entry -> Fault; ValueError naming the entry and the field."""
    where = f"faults.json fault {d.get('name', '?')!r}"
    for key in ("name", "bug", "checks"):
        if not isinstance(d.get(key), str) or not d[key]:
            raise ValueError(f"{where}.{key}: expected a non-empty string, got {d.get(key)!r}")
    if not d["bug"].startswith("bug-"):
        raise ValueError(f"{where}.bug: expected a docs/bugs.md anchor bug-NN-..., got {d['bug']!r}")
    kind = _choice(d, "kind", KINDS, where)
    edits = tuple(
        Edit(
            file=e["file"],
            old=_text(e["old"], f"{where}.edits.old"),
            new=_text(e["new"], f"{where}.edits.new"),
        )
        for e in d.get("edits", ())
    )
    if kind in ("mutation", "config") and not edits:
        raise ValueError(f"{where}.edits: expected at least one {{file, old, new}} for kind {kind}")
    if kind == "broken":
        from moe_cts.conformance.impls.broken import BROKEN

        if d.get("broken") not in BROKEN:
            raise ValueError(f"{where}.broken: expected one of {sorted(BROKEN)}, got {d.get('broken')!r}")
    return Fault(
        name=d["name"], bug=d["bug"], reference=d.get("reference", ""), kind=kind,
        stage=_choice(d, "stage", STAGE_NAMES, where), outcome=Outcome(d.get("outcome", "fail")),
        profile=_choice(d, "profile", PROFILES, where), device=_choice(d, "device", DEVICES, where),
        checks=d["checks"], note=d.get("note", ""), cases=tuple(d.get("cases", ())), edits=edits,
        broken=d.get("broken", ""), impl=dict(d.get("impl", {})), missing_check=d.get("missing_check", ""),
        fill=bool(d.get("fill", True)), env=_env(d.get("env", {}), f"{where}.env"),
    )  # fmt: skip


def _env(d: Any, where: str) -> tuple[tuple[str, str], ...]:
    """A fault's env: MOE_CTS_* names to strings; "data:NAME" values must name a file of conformance/data."""
    if not isinstance(d, dict):
        raise ValueError(f"{where}: expected an object of MOE_CTS_* variables, got {d!r}")
    out = []
    for k, v in sorted(d.items()):
        if not (k.startswith("MOE_CTS_") and isinstance(v, str)):
            raise ValueError(f"{where}.{k}: expected a MOE_CTS_* variable with a string value, got {v!r}")
        if v.startswith("data:"):
            path = CATALOG_PATH.parent / v.removeprefix("data:")
            if not path.is_file():
                raise ValueError(f"{where}.{k}: expected a file of conformance/data, got {v!r}")
            v = str(path)
        out.append((k, v))
    return tuple(out)


@functools.cache
def load_catalog(path: Path = CATALOG_PATH) -> Catalog:
    """data/faults.json, parsed; names unique, every named case resolvable."""
    raw = json.loads(Path(path).read_text())
    cases = {n: Case.from_json({**c, "name": n}) for n, c in raw.get("cases", {}).items()}
    faults = tuple(parse_fault(d) for d in raw["faults"])
    names = [f.name for f in faults]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"faults.json: fault names must be unique, repeated {dup}")
    cat = Catalog(version=str(raw["version"]), faults=faults, cases=cases,
                  not_applicable=tuple(raw.get("not_applicable", ())))  # fmt: skip
    for f in faults:
        for n in f.cases:
            cat.case(n)
    return cat
