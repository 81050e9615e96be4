"""moe-cts: certify a machine's MoE kernels, and check, replay and merge the results.

    moe-cts certify [--device auto|cuda:N|hip:N|interpreter] [--devices all|LIST] [--impl triton]
                    [--profile smoke|quick|full] [--out DIR] [--jobs N] [--timeout S]
                    [--compile auto|none|all|sm90,gfx942,...]
    moe-cts list [--profile P] [--device D]        device matrix, implementations, cases of a profile
    moe-cts replay CASE_ID_OR_DIR                  re-run one case: stage verdicts, worst elements
    moe-cts verify CERT                            why a certificate.tgz is (not) valid
    moe-cts merge REPORT... --out DIR              fleet report of several report.json
    moe-cts compile [--targets] [--full]           ahead-of-time compile matrix (cli/compile.py)
    moe-cts recall [--profile P] [--jobs N]        injected-bug catalog: killed / survived (cli/recall.py)
    moe-cts soak --cases N [--time-limit S]        many generated cases, judged and counted (cli/soak.py)

Exit codes: 0 conformant / valid, 1 not conformant / not valid (also an interrupted run), 2 usage error or a
void run (InternalError, a shard that never started).
"""

from __future__ import annotations

import typer

from moe_cts.conformance.cli import certify, compile, inspect, recall, soak

app = typer.Typer(
    name="moe-cts",
    help="Conformance test suite for fused MoE kernels: certify, list, replay, verify, merge, compile, recall, soak.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
app.command()(certify.certify)
app.command("list")(inspect.list_)
app.command()(inspect.replay)
app.command()(inspect.verify)
app.command()(inspect.merge)
app.command("compile")(compile.compile_)
app.command()(recall.recall)
app.command()(soak.soak)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
