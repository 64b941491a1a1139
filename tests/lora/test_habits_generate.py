"""route() under transformers' generate: beams and num_return_sequences expand each row k times (repeat_interleave),
and the expanded rows follow their source row's adapter (as PEFT since peft#2287 / peft#2921).

Oracle: the same generate call run row by row with that row's adapter active (None: the bare base).
"""

from __future__ import annotations

import pytest
import torch

from adapterhub.lora.attach import activation, attach
from adapterhub.lora.routing import route
from tests import factories

ROWS = ["a", "b", None]
GEN = {"max_new_tokens": 6, "min_new_tokens": 6, "pad_token_id": 0, "do_sample": False}


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> torch.nn.Module:
    root = tmp_path_factory.mktemp("gen")
    base = factories.build_tiny_llama(root / "base")
    m = factories.load_model(base)
    for i, n in enumerate(("a", "b")):
        folder = factories.make_peft_adapter(base, root / n, target_modules=["q_proj", "v_proj", "down_proj"], seed=10 + i)
        attach(m, folder, n, activate=False)
    return m


@pytest.mark.parametrize("kwargs", [{}, {"num_beams": 3}, {"num_beams": 3, "num_return_sequences": 2}],
                         ids=["greedy", "beam3", "beam3-return2"])  # fmt: skip
def test_routed_generate_equals_separate_runs(model: torch.nn.Module, kwargs: dict[str, int]) -> None:
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(3, 120, (len(ROWS), 5), generator=g)
    mask = torch.ones_like(ids)
    with torch.no_grad(), route(model, ROWS):
        mixed = model.generate(input_ids=ids, attention_mask=mask, **GEN, **kwargs)
    k = kwargs.get("num_return_sequences", 1)
    assert mixed.shape[0] == len(ROWS) * k
    for i, name in enumerate(ROWS):
        with torch.no_grad(), activation(model, name):
            alone = model.generate(input_ids=ids[i : i + 1], attention_mask=mask[i : i + 1], **GEN, **kwargs)
        assert torch.equal(mixed[i * k : (i + 1) * k], alone), f"row {i} ({name}) differs from its own run"


def test_a_batch_not_a_multiple_of_the_rows_is_refused(model: torch.nn.Module) -> None:
    from adapterhub.errors import UsageError

    ids = torch.randint(3, 120, (4, 5))
    with pytest.raises(UsageError, match="routing names 3 rows but a layer got a batch of 4"), route(model, ROWS):
        model(input_ids=ids)
