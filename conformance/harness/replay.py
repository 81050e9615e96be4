"""Replay one case, and keep what a failure needs to be reproduced elsewhere.

    replay(case_id, impl, device)          -> CaseResult, the same verdict as in the run (ids replay bit for bit)
    write_failure_dir(dir, record, ...)    -> failures/<case>/: case.json, worst.json, replay.txt
    capture_tensors(dir, case_id, ...)     -> inputs.safetensors, outputs.safetensors (got: implementation,
                                              want: float64 oracle), run in a child process by certify because
                                              the case may crash its process (capture.py)

`python -m moe_cts.conformance.harness.replay capture-many TASKS.json` is that child: every task of the list
in turn, "done" printed after each (capture.py reads them).
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
import traceback
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from moe_cts.conformance.engine.cases import Case
from moe_cts.conformance.engine.devices import select_device
from moe_cts.conformance.engine.results import CaseResult
from moe_cts.conformance.engine.session import DEFAULT_TIMEOUT_S, Session, replay_env
from moe_cts.conformance.impls.registry import load_implementation
from moe_cts.reference.layer import moe_forward
from moe_cts.reference.qweights import QuantTensor

_SAFE = re.compile(r"[^\w.-]")


def failure_dir_name(case_id: str, name: str = "") -> str:
    """failures/<case-id>/; ids longer than a comfortable path component keep a readable prefix and a hash."""
    safe = _SAFE.sub("_", case_id)
    if len(safe) <= 120:
        return safe
    digest = hashlib.sha256(case_id.encode()).hexdigest()[:16]
    return f"{_SAFE.sub('_', name) or safe[:40]}-{digest}"


def replay(
    case_id: str,
    impl_name: str,
    device_arg: str,
    *,
    timeout_s: float | None = None,
    strict_ties: bool = False,
) -> CaseResult:
    """Re-run one case exactly as certify did (the same engine Session, so a hang becomes a Timeout)."""
    s = Session(
        impl=load_implementation(impl_name), impl_name=impl_name, device=select_device(device_arg),
        label=device_arg, timeout_s=timeout_s if timeout_s is not None else DEFAULT_TIMEOUT_S,
        strict_ties=strict_ties,
    )  # fmt: skip
    return s.run(Case.from_id(case_id), "replay")


def write_failure_dir(root: Path, record: dict[str, Any], *, impl: str, device: str) -> Path:
    """case.json (the report record, the case spec), worst.json (worst elements per failing stage), replay.txt."""
    case = Case.from_id(record["case_id"])
    d = root / failure_dir_name(record["case_id"], case.name)
    d.mkdir(parents=True, exist_ok=True)
    doc = {
        "case_id": record["case_id"],
        "case": case.to_json(),
        "impl": impl,
        "device": device,
        "record": record,
        "env": replay_env(),  # the kernel path's variables: `moe-cts replay DIR` sets them again
    }
    (d / "case.json").write_text(json.dumps(doc, indent=1, sort_keys=True, default=str))
    worst = {s["stage"]: s.get("worst", []) for s in record.get("stages", []) if s.get("worst")}
    (d / "worst.json").write_text(json.dumps(worst, indent=1, default=str))
    (d / "replay.txt").write_text(record["replay"] + "\n")
    return d


def capture_tensors(d: Path, case_id: str, impl_name: str, device_arg: str, *, outputs: bool = True) -> None:
    """inputs.safetensors (x and every weight; a quantized case's stored codes and scales too, as
    `<name>.codes` / `<name>.scales`, and its static activation scales), then outputs.safetensors: got (the
    implementation's forward output) and want (the float64 oracle on the same rounded inputs: on the
    quantized weights when the case has them)."""
    device = select_device(device_arg)
    case = Case.from_id(case_id)
    inputs = case.build_inputs(device.torch_device)
    tensors = {"x": inputs.x}
    tensors |= {k: v for k, v in vars(inputs.weights).items() if isinstance(v, torch.Tensor)}
    qw = inputs.qweights
    if qw is not None:
        for name, v in vars(qw).items():
            if isinstance(v, QuantTensor):
                tensors |= {f"{name}.codes": v.codes, f"{name}.scales": v.scales}
            elif isinstance(v, float):  # a13_scale / a2_scale
                tensors[name] = torch.tensor([v], dtype=torch.float64)
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(d / "inputs.safetensors"))
    if not outputs:
        return
    want = torch.from_numpy(moe_forward(inputs.spec, qw if qw is not None else inputs.weights, inputs.x).y)
    got = load_implementation(impl_name).run(inputs, "forward", device)
    save_file(
        {"got": got.detach().cpu().contiguous(), "want": want.contiguous()}, str(d / "outputs.safetensors")
    )


def capture_many(tasks_json: Path) -> None:
    """The child of capture.capture_all: each task's tensors, a task's exception written beside them."""
    for t in json.loads(Path(tasks_json).read_text()):
        try:
            capture_tensors(Path(t["dir"]), t["case_id"], t["impl"], t["device"], outputs=t["outputs"])
        except Exception:
            (Path(t["dir"]) / "capture-error.txt").write_text(traceback.format_exc())
        print("done", flush=True)


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[1] != "capture-many":
        print("usage: python -m moe_cts.conformance.harness.replay capture-many TASKS.json", file=sys.stderr)
        return 2
    capture_many(Path(argv[2]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
