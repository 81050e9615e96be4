"""Longest cases first over the xdist workers of a certify shard (issue 15).

    order_items(items, examples_per_batch)   in place: must-pass tests by descending engine/cost.py estimate,
                                             generated batches placed by theirs; stable, so every worker
                                             collects the same order (xdist checks that)
    LongestFirst                             xdist's load scheduling with a different first hand-out

xdist's load scheduler hands each worker a run of consecutive items first (two with 10 workers and ~80
items, ten with 2 workers), so a list sorted longest first would give the two longest cases to one worker.
LongestFirst deals the first 2n items one by one, snake order (worker i gets items i and 2n-1-i: the
longest case is paired with the shortest of the first round), then, like load, gives a worker the next
item whenever it is down to one pending; a worker always holds one item beyond the one it runs (xdist
needs the next item to finish the current one), one at a time (maxschedchunk 1).

The order changes which worker runs what, never a verdict: each case's inputs come from its id, each
generated batch from its own seed.
"""

from __future__ import annotations

import pytest
from xdist.scheduler import LoadScheduling

from moe_cts.conformance.engine.cases import Case
from moe_cts.conformance.engine.cost import GENERATED_CASE_S, case_cost


def item_cost(item: pytest.Item, examples_per_batch: int) -> float:
    """Estimated seconds of one test of harness/suite.py: a must-pass case or a generated batch."""
    params = getattr(getattr(item, "callspec", None), "params", {})
    if "moe_cts_case_id" in params:
        return case_cost(Case.from_id(params["moe_cts_case_id"]))
    if "moe_cts_batch" in params:
        return GENERATED_CASE_S * examples_per_batch
    return 0.0


def order_items(items: list[pytest.Item], examples_per_batch: int) -> None:
    """Sort items in place by descending cost; ties keep the collection order."""
    costs = {id(it): item_cost(it, examples_per_batch) for it in items}
    items.sort(key=lambda it: -costs[id(it)])


class LongestFirst(LoadScheduling):
    """Load scheduling whose first hand-out deals single items in snake order (module docstring)."""

    def schedule(self) -> None:
        assert self.collection_is_completed
        if self.collection is not None or not self._check_nodes_have_same_collection():
            super().schedule()  # a later call, or different collections: as load does it
            return
        self.collection = next(iter(self.node2collection.values()))
        self.pending[:] = range(len(self.collection))
        self.maxschedchunk = 1
        nodes = list(self.nodes)
        for node in (nodes + nodes[::-1])[: len(self.pending)]:
            self._send_tests(node, 1)
        if not self.pending:  # everything handed out: the workers may stop when done
            for node in nodes:
                node.shutdown()
