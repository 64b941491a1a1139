"""Mixed-adapter batches: one forward in which each row uses its own adapter, or the base alone.

Rows are grouped by adapter once per batch (not per layer), so each wrapped layer runs the base once on the whole
batch and one LoRA pass per adapter on that adapter's rows; a group of consecutive rows is a slice (no copy).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from torch import nn

from ..errors import UsageError
from .state import BASE, RoutePlan, adapter_name, runtime_state

__all__ = ["BASE", "RoutePlan", "route"]


@contextmanager
def route(model: nn.Module, names_per_row: Sequence[str | None]) -> Iterator[None]:
    """Inside the block, row i of every forward's batch uses adapter `names_per_row[i]` (None or "__base__": base).

    Equal to running each row alone with its adapter active (and to PEFT's `adapter_names=`); weights are 1.
    Not thread-safe: the plan is stored on the model for the duration of the block.
    """
    if isinstance(names_per_row, str):
        raise UsageError("route() takes one adapter name per row, not a single string", hint="e.g. ['a', None, 'b']")
    st = runtime_state(model)
    plan = RoutePlan([None if n is None or n == BASE else adapter_name(st, n) for n in names_per_row])
    if st is None:  # every row uses the base: nothing is wrapped, nothing to route
        yield
        return
    if st.fused is not None:
        raise UsageError("cannot route a mixed batch while adapters are fused", hint="call unfuse(model) first")
    if st.route is not None:
        raise UsageError("route() blocks cannot be nested", hint="leave the outer block first")
    st.route = plan
    try:
        yield
    finally:
        st.route = None
