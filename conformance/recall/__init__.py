"""Detection power of moe-cts: inject known bugs into working kernels and count how many the suite catches.

    catalog.py   the fault catalog (data/faults.json): bug class -> injected faults, their stage and cases
    mutate.py    a scratch copy of moe_cts.kernels with one exact text replacement, imported in its place
    worker.py    one fault (or one control case) in a worker process: cases in order, stop at the first kill
    runner.py    the control run, the pool of workers, the recall figure per profile
    table.py     the killed / survived table and its JSON

Entry point: `moe-cts recall` (conformance/cli/recall.py); docs/recall.md holds the measured table.
"""
