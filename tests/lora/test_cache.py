"""AdapterCache: LRU eviction order, pinning, a byte budget never exceeded, outputs equal to a fresh attach."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from adapterhub.errors import AdapterNotFound, CacheFull, UsageError
from adapterhub.lora.attach import active_adapters, attach, list_adapters
from adapterhub.lora.cache import AdapterCache, adapter_nbytes, resident_nbytes
from tests import factories

RANKS = {"a": 2, "b": 4, "c": 4, "d": 8, "e": 2, "f": 6}


@pytest.fixture(scope="module")
def adapters(tmp_path_factory: pytest.TempPathFactory, tiny_llama_dir: Path) -> dict[str, Path]:
    """Six real PEFT adapters for the tiny Llama, of different ranks (so different sizes) and seeds."""
    root = tmp_path_factory.mktemp("cache-adapters")
    return {
        n: factories.make_peft_adapter(tiny_llama_dir, root / n, seed=i, r=r, target_modules=["q_proj", "v_proj", "down_proj"])
        for i, (n, r) in enumerate(RANKS.items())
    }


@pytest.fixture
def model(tiny_llama_dir: Path) -> torch.nn.Module:
    return factories.load_model(tiny_llama_dir)


def _bound(folder: Path) -> int:
    return adapter_nbytes(folder, torch.float32)


@pytest.fixture(scope="module")
def actual(adapters: dict[str, Path], tiny_llama_dir: Path) -> dict[str, int]:
    """The bytes each adapter really holds once attached (measured on a scratch model)."""
    scratch = factories.load_model(tiny_llama_dir)
    out = {}
    for k, folder in adapters.items():
        attach(scratch, folder, k)
        out[k] = resident_nbytes(scratch, k)
    return out


def test_resident_bytes_are_bounded_before_loading(model: torch.nn.Module, adapters: dict[str, Path]) -> None:
    """The header-only bound is never below what attach really allocates, and the cache counts the real bytes."""
    from adapterhub.peft_format import read_layout

    cache = AdapterCache(model, 10**9)
    for folder in adapters.values():
        name = cache.use(folder)
        as_used = sum(t.numel for t in read_layout(folder).header.tensors.values()) * 4  # the fp32 factors the layers use
        assert as_used <= resident_nbytes(model, name) <= _bound(folder)
    assert cache.used_bytes == sum(resident_nbytes(model, n) for n in list_adapters(model))


def test_least_recently_used_is_evicted_first(model: torch.nn.Module, adapters: dict[str, Path], actual: dict[str, int]) -> None:
    a, b, c, d = (adapters[k] for k in "abcd")  # ranks 2, 4, 4, 8
    # a, b, c fit together; d then fits once b goes, and not before
    budget = actual["a"] + actual["c"] + _bound(d)
    assert budget - actual["a"] - actual["b"] >= _bound(c) and budget - actual["a"] >= _bound(b)
    assert budget - actual["a"] - actual["b"] - actual["c"] < _bound(d)
    cache = AdapterCache(model, budget)
    na, nb, nc = cache.use(a), cache.use(b), cache.use(c)
    assert cache.resident == [na, nb, nc] and cache.stats().evictions == 0
    assert cache.use(a) == na  # a hit moves a to the most recent end
    assert cache.resident == [nb, nc, na]
    ne = cache.use(d)  # evicts b, the least recently used, and only b
    assert cache.resident == [nc, na, ne]
    assert set(list_adapters(model)) == {na, nc, ne}  # b was detached from the model
    assert active_adapters(model) == {ne: 1.0}
    s = cache.stats()
    assert (s.hits, s.misses, s.evictions) == (1, 4, 1)


def test_one_big_adapter_evicts_several(model: torch.nn.Module, adapters: dict[str, Path]) -> None:
    a, e, d = adapters["a"], adapters["e"], adapters["d"]  # d (rank 8) is 4x a (rank 2)
    cache = AdapterCache(model, _bound(d))
    cache.use(a)
    cache.use(e)
    cache.use(d)
    assert cache.resident == [str(d.resolve())]
    assert cache.stats().evictions == 2


def test_pinned_adapters_are_never_evicted(model: torch.nn.Module, adapters: dict[str, Path]) -> None:
    a, b, c, d = (adapters[k] for k in "abcd")
    cache = AdapterCache(model, _bound(a) + _bound(d))
    pinned = cache.pin(a)
    for folder in (b, c, d, b, c, d):
        cache.use(folder)
        assert pinned in cache.resident and pinned in list_adapters(model)
    assert cache.stats().pinned == [pinned] and cache.stats().evictions > 0
    cache.unpin(a)
    for folder in (b, c, d):  # a is now the least recently used entry and may go
        cache.use(folder)
    assert pinned not in cache.resident and pinned not in list_adapters(model)


def test_too_big_for_the_budget(model: torch.nn.Module, adapters: dict[str, Path]) -> None:
    cache = AdapterCache(model, _bound(adapters["a"]))
    cache.use(adapters["a"])
    with pytest.raises(CacheFull):
        cache.use(adapters["d"])
    assert cache.resident == [str(adapters["a"].resolve())]  # nothing was evicted for an adapter that cannot fit
    with pytest.raises(UsageError):
        AdapterCache(model, 0)


def test_full_of_pinned_adapters(model: torch.nn.Module, adapters: dict[str, Path]) -> None:
    cache = AdapterCache(model, _bound(adapters["d"]))
    kept = cache.pin(adapters["e"])
    with pytest.raises(CacheFull):  # d fits the budget only if the pinned e goes, and it may not
        cache.use(adapters["d"])
    assert cache.resident == [kept] and list_adapters(model) == [kept]


def test_budget_never_exceeded_and_outputs_equal_fresh_attach(
    model: torch.nn.Module, adapters: dict[str, Path], tiny_llama_dir: Path
) -> None:
    """A long random request stream: after every request the budget holds, the model holds exactly the cached
    adapters, and the output equals a fresh model with only that adapter attached."""
    inputs = factories.sample_inputs(model, batch=2, seq=6)
    fresh: dict[str, torch.Tensor] = {}
    for k, folder in adapters.items():
        m = factories.load_model(tiny_llama_dir)
        attach(m, folder)
        fresh[k] = factories.model_output(m, inputs)
    budget = _bound(adapters["d"]) + _bound(adapters["b"])  # room for 2-4 of them at a time
    cache = AdapterCache(model, budget)
    rng = random.Random(0)
    pinned = cache.pin(adapters["e"])
    for _ in range(40):
        k = rng.choice(list(adapters))
        name = cache.use(adapters[k])
        assert name in list_adapters(model)
        assert cache.used_bytes <= budget
        assert sum(resident_nbytes(model, n) for n in list_adapters(model)) == cache.used_bytes
        assert set(list_adapters(model)) == set(cache.resident)
        assert pinned in cache.resident
        assert torch.allclose(factories.model_output(model, inputs), fresh[k], atol=1e-6, rtol=0)
    assert cache.stats().evictions > 5  # the stream really exercised eviction


def test_registry_refs_load_on_demand(tmp_path: Path, model: torch.nn.Module, adapters: dict[str, Path]) -> None:
    from adapterhub.store.registry import Registry

    reg = Registry(home=tmp_path / "reg")
    reg.add(adapters["a"], name="t/x", task="test")
    cache = AdapterCache(model, 10**9, registry=reg)
    assert cache.use("t/x") == "t/x@1"
    assert cache.use("t/x@1") == "t/x@1" and cache.stats().hits == 1
    reg.add(adapters["b"], name="t/x", task="test")  # a new version: the unpinned ref moves to it
    assert cache.use("t/x") == "t/x@2"
    assert cache.resident == ["t/x@1", "t/x@2"]
    assert "t/x@1" in cache and "t/x@3" not in cache
    cache.evict("t/x@1")
    assert list_adapters(model) == ["t/x@2"]
    with pytest.raises(AdapterNotFound):
        cache.evict("t/x@1")
    cache.clear()
    assert list_adapters(model) == []
