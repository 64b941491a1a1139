"""Progress bars for long work (hashing, merging, transfers): shown on a terminal, silent when piped."""

from __future__ import annotations

import sys
from typing import Any

from tqdm.auto import tqdm


def progress_bar(total: int | None, desc: str, *, enabled: bool | None = None, unit: str = "B", **kw: Any) -> tqdm:
    """A tqdm bar on stderr; `enabled=None` means: only when stderr is a terminal."""
    if enabled is None:
        enabled = sys.stderr.isatty()
    return tqdm(
        total=total, desc=desc, unit=unit, unit_scale=unit == "B", unit_divisor=1024 if unit == "B" else 1000,
        disable=not enabled, file=sys.stderr, leave=False, **kw,
    )  # fmt: skip
