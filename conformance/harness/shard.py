"""One shard per device: device lists, shard labels and directories, and the pytest command of a shard.

    --device D            one shard on D (auto | cuda:N | hip:N | interpreter | cpu)
    --devices all         one shard per visible GPU (the interpreter when there is none)
    --devices a,b,...     one shard per listed device; a device may repeat (interpreter,interpreter)

Each shard is its own pytest process (and xdist workers under it) writing DIR/shards/<label>/, so a device whose
process dies does not stop the others. MOE_CTS_FAKE_DEVICES=N makes `--devices all` return N interpreter
devices: the multi-device path can then be tested on a CPU.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from moe_cts.conformance.harness import suite

FAKE_DEVICES_ENV = "MOE_CTS_FAKE_DEVICES"
_DEVICE_RE = re.compile(r"auto|interpreter|cpu|(cuda|hip):\d+")


class DeviceListError(ValueError):
    """A device list that names no usable device; the message is one sentence for the user."""


@dataclass(frozen=True)
class Shard:
    device: str  # the --moe-cts-device of this shard
    label: str  # unique name in reports: the device, with "#i" when a device repeats

    def directory(self, out: Path) -> Path:
        return out / "shards" / re.sub(r"[^\w.#-]", "_", self.label)


def visible_gpus() -> list[str]:
    """cuda:i (or hip:i on ROCm torch) for every device torch sees."""
    if not torch.cuda.is_available():
        return []
    kind = "hip" if getattr(torch.version, "hip", None) else "cuda"
    return [f"{kind}:{i}" for i in range(torch.cuda.device_count())]


def fake_devices() -> int:
    """N when MOE_CTS_FAKE_DEVICES=N simulates N devices (tests), else 0."""
    fake = os.environ.get(FAKE_DEVICES_ENV, "")
    return int(fake) if fake.isdigit() else 0


def resolve_devices(device: str, devices: str | None) -> list[str]:
    """The device of each shard, in order. Raises DeviceListError for a malformed list."""
    if devices is None:
        names = [device]
    elif devices.strip() == "all":
        fake = os.environ.get(FAKE_DEVICES_ENV)
        if fake:
            if not fake.isdigit() or int(fake) < 1:
                raise DeviceListError(f"{FAKE_DEVICES_ENV} must be a count >= 1, got {fake!r}.")
            return ["interpreter"] * int(fake)
        names = visible_gpus() or ["interpreter"]
    else:
        names = [d.strip() for d in devices.split(",") if d.strip()]
        if not names:
            raise DeviceListError(
                f"--devices {devices!r} names no device; use all or a list such as cuda:0,cuda:1."
            )
    for n in names:
        if not _DEVICE_RE.fullmatch(n):
            raise DeviceListError(
                f"Unknown device {n!r}: use auto, interpreter, cpu, cuda:N or hip:N (for example cuda:0)."
            )
    return names


def make_shards(names: list[str]) -> list[Shard]:
    repeated = {n for n in names if names.count(n) > 1}
    seen: dict[str, int] = {}
    shards = []
    for n in names:
        i = seen.get(n, 0)
        seen[n] = i + 1
        shards.append(Shard(device=n, label=f"{n}#{i}" if n in repeated else n))
    return shards


def suite_file() -> str:
    return suite.__file__


def pytest_command(
    shard: Shard,
    out: Path,
    *,
    impl: str,
    profile: str | None,
    jobs: int,
    timeout_s: float | None,
    examples: int | None = None,
    cases: str | None = None,
    strict_ties: bool = False,
) -> list[str]:
    """The pytest command line of one shard: xdist always (so a crashing case only costs its worker, and xdist
    starts another), as many worker restarts as there could be crashes, no cache or project addopts."""
    cmd = [
        sys.executable, "-m", "pytest", suite_file(),
        "-p", "no:cacheprovider", "-o", "addopts=", "-q", "-rN", "--no-header",
        "-n", str(max(1, jobs)), "--max-worker-restart", "100000",
        "--moe-cts-device", shard.device, "--moe-cts-impl", impl, "--moe-cts-label", shard.label,
        "--moe-cts-results", str(shard.directory(out)),
    ]  # fmt: skip
    if profile:
        cmd += ["--moe-cts-profile", profile]
    if timeout_s is not None:
        cmd += ["--moe-cts-timeout", str(timeout_s)]
    if examples is not None:
        cmd += ["--moe-cts-examples", str(examples)]
    if cases:
        cmd += ["--moe-cts-cases", cases]
    if strict_ties:
        cmd += ["--moe-cts-strict-ties"]
    return cmd
