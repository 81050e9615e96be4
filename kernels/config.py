"""Tile configurations of the grouped GEMMs: data per table (kernels/configs/*.json) plus one rule.

    table  = the table naming the device's target (cuda-sm90 on Hopper), else its backend's (cuda | hip |
             interpreter): TABLES, table_for(backend, target), current_table()
    choose(table, dtype, T, k, E, H, I, batch_invariant) -> TileConfig
      m    = ceil(T * k / E)                   # mean tokens per expert: the M of each expert's GEMM
      row  = first table row with m <= max_tokens_per_expert   (batch_invariant: the fixed row)
             of the dtype class's table: fp32 | 16bit | fp8 (fp8 x fp8 GEMMs; a backend without an fp8
             table uses its 16bit rows, whose 2-byte buffers hold the 1-byte fp8 tiles)
      BLOCK_N, BLOCK_K shrink to next_pow2(N), next_pow2(K) (>= 16) so tiny layers waste no tile
      fill   a table's optional "fill" rule (fill_grid): at m <= its bucket (null: any m), BLOCK_N halves
             while a GEMM's grid would leave the device's SMs under-filled (decode sizes of wide-E models,
             the shared expert's one-expert GEMMs)
      persistent  a GEMM tile's optional "persistent": n (programs per SM; GemmTile.grid): a grid of n x SMs
             programs walks the tiles, the tile loop flattened with the K loop (same bits per tile)
      tma    a GEMM tile's optional "tma": true (the sm90 table's rows): its weight tiles are read through
             tensor descriptors (TMA boxes on sm90+, one per K step; Triton rewrites them to pointer loads on
             targets without TMA), where the weight's strides allow it (grouped_gemm.weight_desc). Same bits
             as the pointer loads (tests/kernels/test_weight_desc.py, on the H200 at every probed point).
      half_tail  a GEMM tile's optional "half_tail": true: an expert's last M tile whose second half is pad only
             runs as BLOCK_M / 2 rows (kernels/_grouped_gemm_kernels.py, HALF_TAIL)
      pdl    a table's optional top-level "pdl": [dtype classes]: those forwards launch their kernel chain with
             programmatic dependent launch (pdl(), _common.pdl_enter; CUDA sm90+)

Tests and the harness force a config with `fused_moe(..., config=cfg)` or `with forced(cfg): ...`.
`all_configs()` lists every table entry (the AOT engineer compiles each for the targets that read its table);
`last_config()` is what the last launch used and `last_table()` the target its table was tuned for, "cuda" or
"cuda@sm90" (reports record both; conformance/engine/provenance.py checks it against the device).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

from moe_cts.kernels import target_info
from moe_cts.kernels.metadata import padded_capacity
from moe_cts.reference.spec import SpecError

CONFIG_DIR = Path(__file__).with_name("configs")
BACKENDS = target_info.BACKENDS
#: Every tile table (kernels/configs/<name>.json). A table whose JSON lists "targets" is read by devices of those
#: targets only (cuda-sm90: Hopper's 227 KiB of shared memory per block allows pipelines sm80's 163 KiB does
#: not); a backend's own table serves its other targets.
TABLES = ("cuda", "cuda-sm90", "hip", "interpreter")
#: MOE_CTS_TABLE: the path of a candidate tile table, in the schema of kernels/configs/*.json. Devices of its
#: "backend" (of its "targets", where it names them) read it instead of the shipped table, so a table can be
#: judged before it ships (`moe-cts certify --table FILE`, docs/certify.md). Read, checked (check_table: every
#: field, and every entry's shared memory on the targets that read it) and named CANDIDATE; a device it does not
#: apply to raises at its first choice rather than run the shipped table under the candidate's name.
TABLE_ENV = "MOE_CTS_TABLE"
CANDIDATE = "candidate"
#: the fields of a table's optional "fill" rule (fill_grid; check_table checks them)
_FILL_KEYS = ("max_tokens_per_expert", "programs_per_sm", "min_block_n")
#: shared memory / LDS per block each backend's table must fit (tests/kernels/test_capabilities.py checks):
#: the smallest limit of the backend's targets (kernels/target_info.py); None = no limit (the interpreter).
SMEM_LIMIT_BYTES = {b: target_info.backend_shared_limit(b) for b in BACKENDS}
#: programs of a persistent GEMM where no SM count is known (GemmTile.grid)
PERSISTENT_PROGRAMS = 3
#: bytes per operand element of each dtype class's tiles (the shared-memory check of every table entry)
ELEM_BYTES = {"fp32": 4, "16bit": 2, "fp8": 1}
FP8_DTYPES = tuple(
    getattr(torch, n) for n in ("float8_e4m3fn", "float8_e4m3fnuz", "float8_e5m2") if hasattr(torch, n)
)


@dataclass(frozen=True)
class GemmTile:
    """Tile of one grouped GEMM (BLOCK_M is shared: it is the alignment block of both GEMMs)."""

    BLOCK_N: int
    BLOCK_K: int
    GROUP_M: int = 8
    num_warps: int = 4
    num_stages: int = 3
    #: weight tiles through a tensor descriptor (TMA on sm90+; Triton rewrites it to pointer loads on
    #: targets without one), where the weight's strides allow it (grouped_gemm.weight_desc)
    tma: bool = False
    #: 0: one program per tile. n > 0: n programs per SM (at most one per tile) walk the used tiles in a
    #: persistent loop that Triton flattens with the K loop, so a tile's epilogue overlaps the next tile's
    #: loads (kernels/_grouped_gemm_kernels.py); the same dots per tile, so the same bits
    persistent: int = 0
    #: fp8 GEMM1 only: a tile of half a quantization group (BLOCK_N = 64, groups of 128) runs in pairs, two
    #: column tiles per program, so its epilogue quantizes the activation (fp8_gemm.fused_requant); no effect
    #: elsewhere. Off by default: it holds a tile's activation through the second K loop (sm90: 175 -> 233
    #: registers; sm100 spills 336 B; AOT, triton 3.9)
    paired: bool = False
    #: one program per tile only: an M tile whose second half holds pad slots only (an expert's last tile,
    #: padded to BLOCK_M) runs as a tile of BLOCK_M / 2 rows, half the MMA work; the same K order per output
    #: element (kernels/_grouped_gemm_kernels.py, HALF_TAIL). Needs BLOCK_M >= 32 and persistent = 0
    half_tail: bool = False
    #: with half_tail, 16-bit GEMMs with descriptor weights (no effect elsewhere): an expert's half tail runs in
    #: the program of its previous tile, one K loop feeding both, so the expert's weights stream once
    #: (kernels/_grouped_gemm_kernels.py, MERGE_TAIL); the same dots, so the same bits
    merge_tail: bool = False
    #: fp8 GEMMs with descriptor weights (tma; GEMM1 with scalar weight scales: fp8_gemm.w_mode), no effect
    #: elsewhere: out.T = W @ x.T, the weight box the MMA's first operand. At BLOCK_M 16 the unswapped dot is
    #: mma.sync, which widens fp8 to fp16 on sm90; swapped, the weight rows fill wgmma's 64 (num_warps 4, >= 64
    #: rows: GEMM1 2 BLOCK_N, GEMM2 BLOCK_N) and it runs in fp8 (kernels/_fp8_gemm_kernels.py)
    swap_ab: bool = False
    #: CUDA only: ptxas's register cap per thread (launch option maxnreg), 0 = the compiler's choice. A cap
    #: lets one more program share an SM: 3 programs of 128 threads need <= 170 (65,536 registers per SM).
    #: Other backends' options have no such field, so launch_options leaves it out there
    maxnreg: int = 0

    def launch_options(self) -> dict[str, int]:
        """The tile's Triton launch options: num_warps, num_stages and, on CUDA where set, maxnreg."""
        opts = {"num_warps": self.num_warps, "num_stages": self.num_stages}
        if self.maxnreg and backend() == "cuda":
            opts["maxnreg"] = self.maxnreg
        return opts

    def grid(self, num_tiles: int) -> tuple[int]:
        """The launch grid of a GEMM of num_tiles tiles (an upper bound: tiles past the used slots exit or are
        never walked): one program per tile, or min(num_tiles, persistent x the device's SMs). With no SM
        count (the interpreter, AOT capture on meta tensors) PERSISTENT_PROGRAMS programs stand for the
        device, so the interpreter's tests walk several tiles per program."""
        if not self.persistent:
            return (num_tiles,)
        sms = _sm_count() or PERSISTENT_PROGRAMS
        return (max(1, min(num_tiles, self.persistent * sms)),)

    def smem_bytes(self, block_m: int, elem_bytes: int, n_b: int) -> int:
        """Operand buffers of the software pipeline: num_stages copies of the A tile (and, merge_tail, the
        merged half tail's A tile) and n_b B tiles."""
        rows = block_m + (block_m // 2 if self.merge_tail else 0)
        return self.num_stages * (rows * self.BLOCK_K + n_b * self.BLOCK_N * self.BLOCK_K) * elem_bytes


#: B tiles per pipeline stage of each GEMM: gate_up holds the gate and the up tile
N_B = {"gate_up": 2, "down": 1}


def _count(v: Any) -> bool:
    """An int >= 0 and not a bool (True is an int to isinstance, but no count of programs or registers)."""
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


@dataclass(frozen=True)
class TileConfig:
    BLOCK_M: int  # alignment block: every expert's slot run is padded to a multiple of it
    gate_up: GemmTile
    down: GemmTile

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def pipeline_bytes(self, elem_bytes: int) -> dict[str, int]:
        """Shared memory of each GEMM's pipeline buffers (GemmTile.smem_bytes, N_B tiles of B per stage)."""
        return {g: getattr(self, g).smem_bytes(self.BLOCK_M, elem_bytes, n_b) for g, n_b in N_B.items()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TileConfig:
        try:
            return cls(
                BLOCK_M=int(d["BLOCK_M"]), gate_up=GemmTile(**d["gate_up"]), down=GemmTile(**d["down"])
            )
        except (KeyError, TypeError) as err:
            raise SpecError("config", "BLOCK_M, gate_up{BLOCK_N, BLOCK_K, ...}, down{...}", dict(d)) from err

    def validate(self) -> TileConfig:
        blocks = {"BLOCK_M": self.BLOCK_M}
        for name in ("gate_up", "down"):
            t = getattr(self, name)
            blocks.update({f"{name}.BLOCK_N": t.BLOCK_N, f"{name}.BLOCK_K": t.BLOCK_K})
            for f in ("GROUP_M", "num_warps", "num_stages"):
                v = getattr(t, f)
                if not (isinstance(v, int) and v >= 1):
                    raise SpecError(f"config.{name}.{f}", "an int >= 1", v)
            for flag in ("tma", "paired", "half_tail", "merge_tail", "swap_ab"):
                if not isinstance(getattr(t, flag), bool):
                    raise SpecError(f"config.{name}.{flag}", "a bool", getattr(t, flag))
            if not _count(t.persistent):
                raise SpecError(f"config.{name}.persistent", "an int >= 0 (programs per SM; 0 = one per tile)",
                                t.persistent)  # fmt: skip
            if not (_count(t.maxnreg) and t.maxnreg <= 255):
                raise SpecError(f"config.{name}.maxnreg", "an int in [0, 255] (0 = the compiler's choice)",
                                t.maxnreg)  # fmt: skip
            if t.half_tail and t.persistent:
                raise SpecError(f"config.{name}.half_tail", "false with persistent > 0 (one program per tile only)",
                                t.half_tail)  # fmt: skip
            if t.merge_tail and not t.half_tail:
                raise SpecError(f"config.{name}.merge_tail", "false without half_tail (it merges half tails)",
                                t.merge_tail)  # fmt: skip
            if t.half_tail and not self.BLOCK_M >= 32:
                raise SpecError(f"config.{name}.half_tail", "false with BLOCK_M < 32 (half a tile is < 16 rows)",
                                t.half_tail)  # fmt: skip
        for field_name, v in blocks.items():
            # tl.dot needs every dimension >= 16; tl.arange needs powers of two
            if not (isinstance(v, int) and v >= 16 and v & (v - 1) == 0):
                raise SpecError(f"config.{field_name}", "a power of two >= 16", v)
        return self


#: MOE_CTS_PDL: "0" turns programmatic dependent launch off where a table sets it; "wait" / "exit" set the trigger
#: (perf probes time them against each other)
PDL_ENV = "MOE_CTS_PDL"
#: config.pdl()'s modes, the PDL constexpr of every chained kernel (_common.pdl_enter). 2 was "launch first"
#: (trigger, then wait), measured in session 21 and removed: docs/h200.md.
PDL_OFF, PDL_WAIT_FIRST, PDL_AT_EXIT = 0, 1, 3
_PDL_MODES = {"wait": PDL_WAIT_FIRST, "exit": PDL_AT_EXIT}


def pdl(dtype_class_name: str) -> int:
    """How a forward's kernel chain of dtype class `dtype_class_name` (fp8 | 16bit | fp32: the class of its
    GEMM operands) uses programmatic dependent launch (_common.pdl_enter): the current table's optional
    top-level "pdl", {class: "wait" | "exit"} (the cuda-sm90 table: grid dependency control exists on sm90+),
    on the CUDA backend only; PDL_OFF for a class it does not name. MOE_CTS_PDL=0 turns it off, MOE_CTS_PDL=wait
    / exit sets the mode of the classes the table names. Same values in every mode: each kernel waits for the
    earlier ones before its first load or store."""
    env = os.environ.get(PDL_ENV)
    if env == "0" or backend() != "cuda":
        return PDL_OFF
    mode = load_table(current_table()).get("pdl", {}).get(dtype_class_name)
    if mode is None:
        return PDL_OFF
    mode = env if env in _PDL_MODES else mode
    if mode not in _PDL_MODES:
        raise SpecError(f"pdl.{dtype_class_name}", f"one of {sorted(_PDL_MODES)}", mode)
    return _PDL_MODES[mode]


def backend() -> str:
    """'interpreter' under TRITON_INTERPRET=1, else 'hip' on ROCm torch, else 'cuda'."""
    if os.environ.get("TRITON_INTERPRET") == "1":
        return "interpreter"
    return "hip" if torch.version.hip else "cuda"


def dtype_class(dtype: torch.dtype) -> str:
    """Table of a GEMM operand dtype: fp32, fp8 (fp8 x fp8 w8a8) or 16bit."""
    if dtype in FP8_DTYPES:
        return "fp8"
    return "fp32" if dtype == torch.float32 else "16bit"


def load_table(name: str) -> dict[str, Any]:
    """A tile table (TABLES, or CANDIDATE: the file MOE_CTS_TABLE names, checked). Its `backend` and optional
    `targets` fields name what it was tuned for: choose() reports them (last_table) so a run can check that the
    table it read is the running device's (bug-27)."""
    if name == CANDIDATE:
        path = candidate_path()
        if path is None:
            raise SpecError(TABLE_ENV, "the path of a tile table JSON (kernels/configs/*.json)", None)
        # keyed by the file's state: a table edited between runs of one process is read again (one stat per call)
        try:
            st = path.stat()
            state = (st.st_mtime_ns, st.st_size)
        except OSError:
            state = None  # _candidate names the file it cannot read
        return _candidate(str(path), state)
    if name not in TABLES:
        raise SpecError("table", f"one of {TABLES}", name)
    return _shipped(name)


@functools.cache
def _shipped(name: str) -> dict[str, Any]:
    return json.loads((CONFIG_DIR / f"{name}.json").read_text())


@functools.cache
def _candidate(path: str, _state: tuple[int, int] | None) -> dict[str, Any]:
    try:
        table = json.loads(Path(path).read_text())
    except OSError as e:
        raise SpecError(TABLE_ENV, "a readable tile table JSON file", f"{path} ({e.strerror})") from None
    except json.JSONDecodeError as e:
        raise SpecError(TABLE_ENV, "a tile table in JSON", f"{path} (line {e.lineno}: {e.msg})") from None
    return check_table(table, f"{TABLE_ENV}:")


def candidate_path() -> Path | None:
    """The candidate table's file (MOE_CTS_TABLE), absolute; None when no candidate is set."""
    value = os.environ.get(TABLE_ENV)
    return _absolute(value) if value else None


@functools.cache
def _absolute(value: str) -> Path:
    # once per value: resolve() asks the file system, and current_table() runs at every launch
    return Path(value).expanduser().resolve()


def tables() -> tuple[str, ...]:
    """The tables devices read now: TABLES, and CANDIDATE when MOE_CTS_TABLE names one."""
    return (*TABLES, CANDIDATE) if candidate_path() is not None else TABLES


def table_targets(name: str) -> tuple[str, ...]:
    """Targets (kernels/target_info.py names) whose devices read table `name`: its own "targets", or every
    target of its backend that no other table names; the candidate's targets read it and no shipped table."""
    table = load_table(name)
    if "targets" in table:
        reads = tuple(table["targets"])
    else:
        # a candidate without targets takes every target of its backend: the shipped tables' claims do not count
        others = () if name == CANDIDATE else TABLES
        claimed = {t for n in others if n != name for t in load_table(n).get("targets", ())}
        reads = tuple(
            t.name
            for t in target_info.TARGETS.values()
            if t.backend == table["backend"] and t.name not in claimed
        )
    if name != CANDIDATE and candidate_path() is not None:
        taken = set(table_targets(CANDIDATE))
        reads = tuple(t for t in reads if t not in taken)
    return reads


def table_for(backend_name: str, target: str | None) -> str:
    """The table a device of `target` (e.g. "sm90"; None: unknown) on `backend_name` reads: the candidate where
    it applies, else the shipped table that names the target, else the backend's."""
    if candidate_path() is not None and _candidate_applies(load_table(CANDIDATE), backend_name, target):
        return CANDIDATE
    for name in TABLES:
        table = load_table(name)
        if table["backend"] == backend_name and target in table.get("targets", ()):
            return name
    return backend_name


def _device_target(backend_name: str) -> str | None:
    """The target name (target_info) of the current GPU: "sm90", "gfx942"; None without one."""
    if not torch.cuda.is_available():
        return None
    return _gpu_target(backend_name, torch.cuda.current_device())


def current_target() -> str | None:
    """The target name (target_info) of the device kernels launch on: "sm90", "gfx942", "interpreter"; None on a
    GPU backend without a GPU."""
    b = backend()
    return "interpreter" if b == "interpreter" else _device_target(b)


@functools.cache
def _gpu_target(backend_name: str, index: int) -> str:
    if backend_name == "hip":  # "gfx942:sramecc+:xnack-"
        return torch.cuda.get_device_properties(index).gcnArchName.split(":")[0]
    major, minor = torch.cuda.get_device_capability(index)
    return f"sm{10 * major + minor}"


def _candidate_applies(table: Mapping[str, Any], backend_name: str, target: str | None) -> bool:
    return table["backend"] == backend_name and ("targets" not in table or target in table["targets"])


def current_table() -> str:
    """The table of the device kernels launch on: backend() and, on CUDA, the current device's capability. With a
    candidate (MOE_CTS_TABLE) that does not apply to this device: a SpecError naming it, not the shipped table
    under the candidate's name."""
    b = backend()
    target = current_target()
    value = os.environ.get(TABLE_ENV)
    if not value:  # the shipped tables: one dict lookup per launch, as before candidates existed
        return _shipped_table_for(b, target)
    name = table_for(b, target)
    if name != CANDIDATE:
        cand = load_table(CANDIDATE)
        raise SpecError(
            TABLE_ENV,
            f"a table this device reads (backend {b!r}" + (f", target {target!r})" if target else ")"),
            f"{candidate_path()} (backend {cand['backend']!r}, targets {cand.get('targets', 'all')})",
        )
    return name


@functools.cache
def _shipped_table_for(backend_name: str, target: str | None) -> str:
    return table_for(backend_name, target)


def table_shared_limit(name: str) -> int | None:
    """Shared memory every entry of table `name` must fit: the smallest limit of the targets that read it."""
    limits = [target_info.get(t).shared_limit_bytes for t in table_targets(name)]
    return None if not limits or None in limits else min(limits)


def _table_label(table: Mapping[str, Any]) -> str:
    """ "cuda", or "cuda@sm90" for a table of named targets (what last_table() reports)."""
    targets = table.get("targets")
    return table["backend"] + ("@" + "+".join(targets) if targets else "")


def _row_config(row: Mapping[str, Any]) -> TileConfig:
    return TileConfig.from_dict({k: v for k, v in row.items() if k != "max_tokens_per_expert"}).validate()


#: the top-level fields of a tile table; "about" / "tuned" / "fp8_tuned" are the record of how it was measured
_TABLE_KEYS = (
    "backend",
    "targets",
    "tables",
    "batch_invariant",
    "fill",
    "pdl",
    "about",
    "tuned",
    "fp8_tuned",
)


def check_table(table: Any, where: str = "") -> dict[str, Any]:
    """A tile table's fields, each against the schema choose() reads; SpecError naming the first field that is
    wrong (prefixed by `where`, "MOE_CTS_TABLE:" for a candidate), else the table. Shared memory: every entry's
    pipeline buffers (GemmTile.smem_bytes) within the smallest limit of the targets that read the table
    (docs/bugs.md#bug-13-lds-overflow). Row order: max_tokens_per_expert ints >= 1 that increase, the last
    row null (every m has a row)."""
    if not isinstance(table, dict):
        raise SpecError(f"{where}table", "a JSON object", type(table).__name__)
    unknown = sorted(set(table) - set(_TABLE_KEYS))
    if unknown:
        raise SpecError(f"{where}{unknown[0]}", f"one of the table fields {_TABLE_KEYS}", unknown[0])
    b = table.get("backend")
    if b not in BACKENDS:
        raise SpecError(f"{where}backend", f"one of {BACKENDS}", b)
    own = tuple(t.name for t in target_info.TARGETS.values() if t.backend == b)
    targets = table.get("targets", own)
    if not (isinstance(targets, list | tuple) and targets and set(targets) <= set(own)):
        raise SpecError(f"{where}targets", f"a non-empty list of {b} targets {own}", targets)
    limits = [target_info.get(t).shared_limit_bytes for t in targets]
    limit = None if None in limits else min(limits)
    classes = table.get("tables")
    if not (isinstance(classes, dict) and {"16bit", "fp32"} <= set(classes) <= set(ELEM_BYTES)):
        raise SpecError(f"{where}tables", "an object of row lists for 16bit, fp32 and optionally fp8",
                        sorted(classes) if isinstance(classes, dict) else classes)  # fmt: skip
    for dc, rows in classes.items():
        if not (isinstance(rows, list) and rows):
            raise SpecError(f"{where}tables.{dc}", "a non-empty list of rows", rows)
        last = 0
        for i, row in enumerate(rows):
            field = f"{where}tables.{dc}[{i}]"
            m = row.get("max_tokens_per_expert", "missing") if isinstance(row, dict) else "missing"
            final = i == len(rows) - 1
            if final and m is not None:
                raise SpecError(
                    f"{field}.max_tokens_per_expert", "null in the last row (every m has a row)", m
                )
            if not final and not (_count(m) and m > last):
                raise SpecError(
                    f"{field}.max_tokens_per_expert", f"an int > {last} (the rows' limits increase)", m
                )
            last = m or last
            _check_entry(row, field, dc, limit, bucket=True)
    inv = table.get("batch_invariant")
    if not (isinstance(inv, dict) and {"16bit", "fp32"} <= set(inv) <= set(ELEM_BYTES)):
        raise SpecError(f"{where}batch_invariant", "an object of one row each for 16bit and fp32",
                        sorted(inv) if isinstance(inv, dict) else inv)  # fmt: skip
    for dc, row in inv.items():
        _check_entry(row, f"{where}batch_invariant.{dc}", dc, limit, bucket=False)
    fill = table.get("fill")
    if fill is not None:
        ok = isinstance(fill, dict) and set(fill) == set(_FILL_KEYS)
        reach, per_sm, min_n = (fill.get(k) for k in _FILL_KEYS) if ok else (None, None, None)
        if not (ok and (reach is None or (_count(reach) and reach >= 1))
                and isinstance(per_sm, int | float) and not isinstance(per_sm, bool) and per_sm > 0
                and _count(min_n) and min_n >= 16 and min_n & (min_n - 1) == 0):  # fmt: skip
            raise SpecError(f"{where}fill", f"{{{', '.join(_FILL_KEYS)}}}: null or an int >= 1, a number > 0, "
                            "a power of two >= 16", fill)  # fmt: skip
    pdl_modes = table.get("pdl", {})
    if not (isinstance(pdl_modes, dict) and set(pdl_modes) <= set(ELEM_BYTES)):
        raise SpecError(f"{where}pdl", f"an object of dtype classes {tuple(ELEM_BYTES)}", pdl_modes)
    for dc, mode in pdl_modes.items():
        if mode not in _PDL_MODES:
            raise SpecError(f"{where}pdl.{dc}", f"one of {sorted(_PDL_MODES)}", mode)
    return table


def _check_entry(row: Any, field: str, dc: str, limit: int | None, *, bucket: bool) -> None:
    """One row: a valid TileConfig (its field names prefixed by `field`) within `limit` bytes of shared memory."""
    if not isinstance(row, dict):
        raise SpecError(field, "a row object {BLOCK_M, gate_up, down}", row)
    try:
        cfg = TileConfig.from_dict(
            {k: v for k, v in row.items() if not (bucket and k == "max_tokens_per_expert")}
        )
        cfg.validate()
    except SpecError as e:
        raise SpecError(f"{field}.{e.field.removeprefix('config').lstrip('.')}".rstrip("."), e.expected,
                        e.got) from None  # fmt: skip
    if limit is None:
        return
    for name, used in cfg.pipeline_bytes(ELEM_BYTES[dc]).items():
        if used > limit:
            raise SpecError(f"{field}.{name}", f"pipeline buffers within {limit} B of shared memory "
                            "(num_stages x (BLOCK_M + n_B BLOCK_N) x BLOCK_K x bytes)", f"{used} B")  # fmt: skip


def all_configs() -> list[tuple[str, str, str, TileConfig]]:
    """Every table entry as (table name, dtype class, bucket name, config), the candidate's too (tables())."""
    out = []
    for b in tables():
        table = load_table(b)
        for dc, rows in table["tables"].items():
            for row in rows:
                limit = row["max_tokens_per_expert"]
                cfg = _row_config(row)
                out.append((b, dc, f"m<={limit}" if limit is not None else "m>any", cfg))
                fill = table.get("fill")
                if _fill_reaches(fill, limit):
                    # the narrowest tiles fill_grid can reach from this row
                    narrow = {"BLOCK_N": fill["min_block_n"]}
                    cfg = replace(
                        cfg, gate_up=replace(cfg.gate_up, **narrow), down=replace(cfg.down, **narrow)
                    )
                    out.append((b, dc, f"m<={limit} filled", cfg))
        for dc, row in table["batch_invariant"].items():
            out.append((b, dc, "batch_invariant", _row_config(row)))
    return out


def _pow2_at_least(n: int) -> int:
    return max(16, 1 << max(0, (n - 1).bit_length()))


def fit_to_shape(cfg: TileConfig, H: int, I: int) -> TileConfig:
    """Shrink N/K blocks that exceed the (power-of-two rounded) layer dims; BLOCK_M stays."""

    def fit(t: GemmTile, N: int, K: int) -> GemmTile:
        return replace(
            t, BLOCK_N=min(t.BLOCK_N, _pow2_at_least(N)), BLOCK_K=min(t.BLOCK_K, _pow2_at_least(K))
        )

    return replace(cfg, gate_up=fit(cfg.gate_up, I, H), down=fit(cfg.down, H, I))


def choose(
    *,
    dtype: torch.dtype,
    num_tokens: int,
    top_k: int,
    num_experts: int,
    hidden_size: int,
    intermediate_size: int,
    batch_invariant: bool = False,
    backend_name: str | None = None,
) -> TileConfig:
    """The deterministic heuristic (module docstring) on table `backend_name` (a TABLES name; default: the
    current device's, current_table()). A forced config wins over it."""
    forced_cfg = _FORCED[-1] if _FORCED else None
    if forced_cfg is not None:
        _TABLE[0] = None
        return forced_cfg
    table = load_table(backend_name or current_table())
    _TABLE[0] = _table_label(table)
    dc = dtype_class(dtype)
    if batch_invariant:  # independent of T by construction: batch composition cannot change a row's bits
        row = table["batch_invariant"].get(dc) or table["batch_invariant"]["16bit"]
    else:
        m = tokens_per_expert(num_tokens * top_k, num_experts)
        rows = table["tables"].get(dc) or table["tables"]["16bit"]
        row = rows[bucket_row(rows, m)]
    cfg = fit_to_shape(_row_config(row), hidden_size, intermediate_size)
    if batch_invariant:
        return cfg
    return fill_grid(cfg, table.get("fill"), num_tokens * top_k, num_experts, hidden_size, intermediate_size)


def bucket_row(rows: list[Mapping[str, Any]], m: int) -> int:
    """The index of the row choose() reads at m tokens per expert: the first whose max_tokens_per_expert holds m
    (null: any m), else the last."""
    return next(
        (
            i
            for i, r in enumerate(rows)
            if r["max_tokens_per_expert"] is None or m <= r["max_tokens_per_expert"]
        ),
        len(rows) - 1,
    )


def tokens_per_expert(num_assignments: int, num_experts: int) -> int:
    """m = ceil(T * k / E): the mean rows of each expert's GEMM, the key of the table buckets."""
    return -(-num_assignments // max(num_experts, 1))


def _fill_reaches(rule: Mapping[str, Any] | None, m: int | None) -> bool:
    """Whether a fill rule applies at m tokens per expert (None: a row for any m, the table's last); the rule's
    max_tokens_per_expert null means every m."""
    if not rule:
        return False
    reach = rule["max_tokens_per_expert"]
    return reach is None or (m is not None and m <= reach)


def fill_grid(
    cfg: TileConfig,
    rule: Mapping[str, Any] | None,
    num_assignments: int,
    num_experts: int,
    H: int,
    I: int,
    sm_count: int | None = None,
) -> TileConfig:
    """A table's "fill" rule: at decode sizes a GEMM's grid can hold fewer programs than the device has SMs
    (gpt-oss-120b at T = 1: 4 tiles of 16 slots x 45 column tiles = 180 programs for 132 SMs, a second wave a
    third full). Where m <= rule["max_tokens_per_expert"] (null: at every m), each GEMM's BLOCK_N halves, down
    to rule["min_block_n"], while its grid (the launch's tile count: padded_capacity / BLOCK_M tiles x column
    tiles) stays under rule["programs_per_sm"] x the device's SMs. The sm90 rule has no bucket: past decode
    sizes only the shared expert's one-expert GEMMs are that small (DeepSeek-V3's GEMM1 is 16 programs at
    T = 16 to 512 under the fp8 and 16-bit rows; Qwen2-57B's bf16 T = 128 forward gained x1.13 from filling
    it on the H200, session 10); routed grids are full there. No rule, no GPU (sm_count None): cfg."""
    # the bucket first: the device query is only made where the rule can apply
    if not _fill_reaches(rule, tokens_per_expert(num_assignments, num_experts)):
        return cfg
    sm_count = sm_count if sm_count is not None else _sm_count()
    if sm_count is None:
        return cfg
    blocks = padded_capacity(num_assignments, num_experts, cfg.BLOCK_M) // cfg.BLOCK_M
    want = rule["programs_per_sm"] * sm_count

    def narrow(t: GemmTile, N: int) -> GemmTile:
        bn = t.BLOCK_N
        while blocks * -(-N // bn) < want and bn // 2 >= rule["min_block_n"]:
            bn //= 2
        return replace(t, BLOCK_N=bn)

    return replace(cfg, gate_up=narrow(cfg.gate_up, I), down=narrow(cfg.down, H))


def _sm_count() -> int | None:
    """Multiprocessors of the device kernels launch on (CUDA and ROCm builds of torch), None without one."""
    if backend() == "interpreter" or not torch.cuda.is_available():
        return None
    return _device_sm_count(torch.cuda.current_device())


@functools.cache
def _device_sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


_FORCED: list[TileConfig] = []
_LAST: list[TileConfig | None] = [None]
_TABLE: list[str | None] = [None]


def as_config(cfg: TileConfig | Mapping[str, Any]) -> TileConfig:
    """A config the caller gives (no table row): last_table() reads None until the next choose()."""
    _TABLE[0] = None
    return (cfg if isinstance(cfg, TileConfig) else TileConfig.from_dict(cfg)).validate()


@contextlib.contextmanager
def forced(cfg: TileConfig | Mapping[str, Any]) -> Iterator[TileConfig]:
    """Every launch inside the block uses cfg (as given: no shrinking to the shape)."""
    c = as_config(cfg)
    _FORCED.append(c)
    try:
        yield c
    finally:
        _FORCED.pop()


def record(cfg: TileConfig) -> None:
    _LAST[0] = cfg


def last_config() -> TileConfig | None:
    """The config of the most recent fused_moe / stage launch in this process (None before any)."""
    return _LAST[0]


def last_table() -> str | None:
    """What the table the most recent choose() read was tuned for: its backend, and "@targets" when it names
    them ("cuda@sm90"); None: a forced config, or none yet."""
    return _TABLE[0]
