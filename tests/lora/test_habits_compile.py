"""Hot swap under torch.compile: set_active on a compiled model gives the new adapter's outputs (equal to eager),
with one graph per distinct selection and no recompile when switching back and forth after that."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from adapterhub.lora.attach import activation, attach, set_active
from tests import factories

SELECTIONS: list[Any] = ["a", "b", None, ["a", "b"]]


def test_switching_a_compiled_model_does_not_recompile(tmp_path: Path) -> None:
    import torch._dynamo

    base = factories.build_tiny_llama(tmp_path / "base")
    model = factories.load_model(base)
    for i, n in enumerate("ab"):
        attach(model, factories.make_peft_adapter(base, tmp_path / n, target_modules=["q_proj", "v_proj"], seed=i), n,
               activate=False)  # fmt: skip
    inputs = factories.sample_inputs(model)
    eager = {}
    for sel in SELECTIONS:
        with activation(model, sel):
            eager[str(sel)] = factories.model_output(model, inputs)
    graphs: list[torch.fx.GraphModule] = []

    def counting_backend(gm: torch.fx.GraphModule, example_inputs: list[torch.Tensor]) -> Any:
        graphs.append(gm)
        return gm.forward

    torch._dynamo.reset()
    try:
        compiled = torch.compile(model, backend=counting_backend)
        for rnd in range(3):
            for sel in SELECTIONS:
                set_active(model, sel)
                with torch.no_grad():
                    out = compiled(**inputs).logits
                assert torch.equal(out, eager[str(sel)]), f"round {rnd}, {sel}"
            if rnd == 0:
                first = len(graphs)
                assert first == len(SELECTIONS), "one graph per distinct selection, no graph breaks"
        assert len(graphs) == first, "switching between selections already seen recompiled"
    finally:
        torch._dynamo.reset()


@pytest.mark.parametrize("weight", [0.5])
def test_a_new_weight_compiles_once_more(tmp_path: Path, weight: float) -> None:
    """Weights are Python floats the graph is specialised on: a new weight is a new selection (documented)."""
    import torch._dynamo

    base = factories.build_tiny_llama(tmp_path / "base")
    model = factories.load_model(base)
    attach(model, factories.make_peft_adapter(base, tmp_path / "a", target_modules=["q_proj"]), "a")
    inputs = factories.sample_inputs(model)
    count: list[int] = []

    def counting_backend(gm: torch.fx.GraphModule, example_inputs: list[torch.Tensor]) -> Any:
        count.append(1)
        return gm.forward

    torch._dynamo.reset()
    try:
        compiled = torch.compile(model, backend=counting_backend)
        with torch.no_grad():
            compiled(**inputs)
            set_active(model, "a", weight)
            out = compiled(**inputs).logits
        assert len(count) == 2
        assert torch.equal(out, factories.model_output(model, inputs))
    finally:
        torch._dynamo.reset()
