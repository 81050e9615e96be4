"""The batches a batch-invariance claim is checked on (Capabilities.batch_invariant): a token's output
must be bitwise the same whatever else is in the batch, at any position, in a batch of any size.

    batch_variants(T) -> [(label, rows)]     rows: (n,) int64 token indices of the sub-batch, in its order

    label                    rows                    what changes for the tokens
    token 0 alone            [0]                     batch size 1 (decode)
    the last token alone     [T - 1]                 batch size 1, from the batch's end
    the batch reversed       [T - 1, ..., 0]         every token's position (same batch size)
    the first half           [0, ceil(T / 2))        batch size: a tile config chosen from T changes here

The runner compares y[rows] of the full batch with the forward of x[rows], bit for bit
(docs/bugs.md#bug-14-batch-variance).
"""

from __future__ import annotations

import torch


def batch_variants(T: int) -> list[tuple[str, torch.Tensor]]:
    """The sub-batches of a batch of T >= 2 tokens (module docstring); [] below 2 tokens."""
    if T < 2:
        return []
    idx = torch.arange(T)
    return [
        ("token 0 alone", idx[:1]),
        ("the last token alone", idx[-1:]),
        ("the batch reversed", idx.flip(0)),
        ("the first half", idx[: -(-T // 2)]),
    ]
