"""Longest cases first (harness/schedule.py, engine/cost.py; issue 15)."""

from __future__ import annotations

from types import SimpleNamespace

from moe_cts.conformance.engine.cases import Case
from moe_cts.conformance.engine.cost import case_cost
from moe_cts.conformance.engine.must_pass import must_pass_cases, must_pass_for
from moe_cts.conformance.harness.schedule import LongestFirst, order_items


def _named(name: str) -> Case:
    return next(c for c in must_pass_cases() if c.name == name)


def test_the_h200_critical_path_cases_rank_first():
    """The four longest must-pass cases of the session-4 H200 run (216, 143, 118, 115 s) are the estimate's
    top four of the quick profile on a GPU."""
    ranked = sorted(must_pass_for("quick", "cuda"), key=case_cost, reverse=True)
    top = {c.name for c in ranked[:4]}
    assert top == {"quant-deepseek-v3-fp8-block-width", "mixtral-8x7b-full", "int32-offsets-deepseek-width",
                   "deepseek-v3-width"}, [c.name for c in ranked[:6]]  # fmt: skip
    assert case_cost(_named("quant-deepseek-v3-fp8-block")) > case_cost(_named("one-token"))


def _item(case_id=None, batch=None):
    params = {"moe_cts_case_id": case_id} if case_id else {"moe_cts_batch": batch}
    return SimpleNamespace(callspec=SimpleNamespace(params=params), label=case_id or f"g{batch}")


def test_order_items_puts_the_longest_first_and_keeps_ties_in_order():
    small, big = _named("one-token"), _named("mixtral-8x7b-full")
    items = [_item(small.case_id), _item(batch=0), _item(big.case_id), _item(batch=1)]
    order_items(items, examples_per_batch=25)
    assert [it.label for it in items] == [big.case_id, "g0", "g1", small.case_id]


class _Node:
    def __init__(self, name):
        self.name, self.sent, self.shutting_down, self.stopped = name, [], False, False
        self.gateway = SimpleNamespace(id=name)

    def send_runtest_some(self, indices):
        self.sent.extend(indices)

    def shutdown(self):
        self.stopped = True


def _scheduler(n_nodes: int, n_items: int) -> tuple[LongestFirst, list[_Node]]:
    config = SimpleNamespace(getvalue=lambda name: [f"{n_nodes}*popen"], getoption=lambda name: None)
    sched = LongestFirst(config, log=SimpleNamespace(loadsched=lambda *a: None))
    nodes = [_Node(f"gw{i}") for i in range(n_nodes)]
    collection = [f"test[{i}]" for i in range(n_items)]
    for node in nodes:
        sched.add_node(node)
        sched.add_node_collection(node, collection)
    return sched, nodes


def test_longest_first_deals_the_first_items_one_per_worker_in_snake_order():
    """Item i is the i-th longest: the first round goes to different workers, the second comes back the
    other way (worker 0 holds the longest and the shortest of the first 2n), as xdist's own load scheduler
    would not (it gives worker 0 items 0 and 1)."""
    sched, nodes = _scheduler(3, 20)
    sched.schedule()
    assert [n.sent for n in nodes] == [[0, 5], [1, 4], [2, 3]]
    sched.mark_test_complete(nodes[2], 2)  # worker 2 finished its first item: it gets the next one only
    assert nodes[2].sent == [2, 3, 6] and nodes[0].sent == [0, 5]


def test_longest_first_with_fewer_items_than_two_rounds_hands_out_everything_and_stops():
    sched, nodes = _scheduler(3, 4)
    sched.schedule()
    assert [n.sent for n in nodes] == [[0], [1], [2, 3]] and all(n.stopped for n in nodes)
