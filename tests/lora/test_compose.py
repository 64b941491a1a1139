"""Compose: exactness properties (hypothesis), agreement with PEFT's add_weighted_adapter, registry lineage."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapterhub.errors import UnsupportedFeature, UsageError
from adapterhub.lora.compose import compose, compose_adapters
from adapterhub.peft_format import LayerKind, LoraConfig, lora_scaling
from adapterhub.peft_weights import LoraModule, PeftAdapter, load_adapter
from tests import factories

SHAPES = {"m.q": (6, 5), "m.v": (4, 5), "m.o": (5, 7)}  # module -> (out, in)


def make_adapter(seed: int, ranks: dict[str, int], alpha: float, rslora: bool) -> PeftAdapter:
    g = torch.Generator().manual_seed(seed)
    modules = {}
    for name, r in ranks.items():
        out_f, in_f = SHAPES[name]
        s = lora_scaling(alpha, r, rslora)
        modules[name] = LoraModule(
            name, LayerKind.LINEAR, torch.randn(r, in_f, generator=g), torch.randn(out_f, r, generator=g), r, alpha, s
        )
    cfg = LoraConfig(r=max(ranks.values()), lora_alpha=alpha, use_rslora=rslora, target_modules=sorted(ranks))
    return PeftAdapter(cfg, modules)


def true_delta(adapters: list[tuple[PeftAdapter, float]], module: str) -> torch.Tensor:
    out_f, in_f = SHAPES[module]
    d = torch.zeros(out_f, in_f, dtype=torch.float64)
    for a, w in adapters:
        m = a.modules.get(module)
        if m is not None:
            d += w * m.scaling * (m.lora_B.double() @ m.lora_A.double())
    return d


def composed_delta(ad: PeftAdapter, module: str) -> torch.Tensor:
    m = ad.modules[module]
    # what PEFT will compute from the saved config: scaling from r/alpha as written
    s = ad.config.scaling_for(module)
    assert s == pytest.approx(m.scaling)
    return s * (m.lora_B.double() @ m.lora_A.double())


def close(a: torch.Tensor, b: torch.Tensor, rtol: float = 1e-5) -> bool:
    return bool((a - b).abs().max() <= rtol * max(1.0, float(b.abs().max())))


adapter_specs = st.lists(
    st.tuples(
        st.integers(0, 10_000),  # seed
        st.dictionaries(st.sampled_from(sorted(SHAPES)), st.integers(1, 4), min_size=1, max_size=3),  # targets -> rank
        st.sampled_from([1.0, 4.0, 16.0]),  # alpha
        st.booleans(),  # rsLoRA
        st.floats(-2, 2, allow_nan=False).filter(lambda w: abs(w) > 1e-3),  # weight
    ),
    min_size=1,
    max_size=3,
)


def build(specs: list) -> list[tuple[PeftAdapter, float]]:
    return [(make_adapter(seed, ranks, alpha, rs), w) for seed, ranks, alpha, rs, w in specs]


@settings(max_examples=40, deadline=None)
@given(adapter_specs)
def test_cat_is_exactly_the_weighted_sum_of_deltas(specs: list) -> None:
    adapters = build(specs)
    out = compose_adapters(adapters, "cat").adapter
    assert out.config.use_rslora is False
    for module in {m for a, _ in adapters for m in a.modules}:
        assert close(composed_delta(out, module), true_delta(adapters, module))
        assert out.modules[module].rank == sum(a.modules[module].rank for a, _ in adapters if module in a.modules)


@settings(max_examples=40, deadline=None)
@given(adapter_specs, st.integers(1, 4))
def test_svd_is_exact_at_full_rank_and_the_best_approximation_below(specs: list, rank: int) -> None:
    adapters = build(specs)
    full = compose_adapters(adapters, "svd", rank=12).adapter
    low = compose_adapters(adapters, "svd", rank=rank)
    for module in {m for a, _ in adapters for m in a.modules}:
        target = true_delta(adapters, module)
        assert close(composed_delta(full, module), target)
        s = torch.linalg.svdvals(target)
        r = min(rank, s.shape[0])
        # Eckart-Young: the best rank-r error in Frobenius norm is the norm of the dropped singular values
        err = torch.linalg.norm(composed_delta(low.adapter, module) - target)
        # (float32 factors: a round-off floor relative to the delta's size)
        assert float(err) == pytest.approx(float(s[r:].pow(2).sum().sqrt()), rel=1e-4, abs=1e-6 * max(1.0, float(s[0])))
        total = float(s.pow(2).sum())
        assert low.energy[module] == pytest.approx(float(s[:r].pow(2).sum()) / total if total else 1.0, rel=1e-6, abs=1e-9)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 10_000), st.dictionaries(st.sampled_from(sorted(SHAPES)), st.integers(1, 4), min_size=1), st.booleans())
def test_one_adapter_with_weight_one_returns_its_own_delta(seed: int, ranks: dict[str, int], rs: bool) -> None:
    adapters = [(make_adapter(seed, ranks, 8.0, rs), 1.0)]
    cases = [("cat", {}), ("svd", {}), ("linear", {}), ("ties", {"density": 1.0}), ("magnitude_prune", {"density": 1.0}),
             ("dare_linear", {"density": 1.0, "seed": 1}), ("dare_ties", {"density": 1.0, "seed": 1})]  # fmt: skip
    for method, kw in cases:
        out = compose_adapters(adapters, method, **kw).adapter
        for module in ranks:
            assert close(composed_delta(out, module), true_delta(adapters, module)), (method, module)


def test_dare_is_reproducible_with_a_seed() -> None:
    adapters = [(make_adapter(1, {"m.q": 3, "m.o": 2}, 8.0, False), 0.6), (make_adapter(2, {"m.q": 3}, 4.0, True), 0.9)]
    a = compose_adapters(adapters, "dare_ties", density=0.5, seed=7).adapter
    b = compose_adapters(adapters, "dare_ties", density=0.5, seed=7).adapter
    c = compose_adapters(adapters, "dare_ties", density=0.5, seed=8).adapter
    assert all(
        torch.equal(a.modules[m].lora_A, b.modules[m].lora_A) and torch.equal(a.modules[m].lora_B, b.modules[m].lora_B)
        for m in a.modules
    )
    assert not torch.allclose(composed_delta(a, "m.q"), composed_delta(c, "m.q"))
    with pytest.raises(UsageError, match="seed"):
        compose_adapters(adapters, "dare_linear", density=0.5)


def test_bad_arguments_are_usage_errors() -> None:
    adapters = [(make_adapter(1, {"m.q": 3}, 8.0, False), 1.0), (make_adapter(2, {"m.q": 2}, 8.0, False), 1.0)]
    with pytest.raises(UsageError, match="equal ranks"):
        compose_adapters(adapters, "linear")
    with pytest.raises(UsageError, match="density"):
        compose_adapters(adapters, "ties")
    with pytest.raises(UsageError, match="unknown compose method"):
        compose_adapters(adapters, "average")
    dora = make_adapter(3, {"m.q": 2}, 8.0, False)
    dora.modules["m.q"].magnitude = torch.ones(6)
    with pytest.raises(UnsupportedFeature, match="DoRA"):
        compose_adapters([(dora, 1.0)], "cat")


# --- against PEFT's add_weighted_adapter on a real model -----------------------------------------------------


def peft_deltas(base: Path, adapters: list[tuple[Path, float]], **kw: object) -> dict[str, torch.Tensor]:
    """Delta per module of PEFT's add_weighted_adapter result (its own get_delta_weight)."""
    from peft import PeftModel

    pm = PeftModel.from_pretrained(factories.load_model(base), str(adapters[0][0]), adapter_name="a0")
    for i, (folder, _) in enumerate(adapters[1:], 1):
        pm.load_adapter(str(folder), adapter_name=f"a{i}")
    pm.add_weighted_adapter([f"a{i}" for i in range(len(adapters))], [w for _, w in adapters], "mix", **kw)
    return _deltas(pm, "mix")


def _deltas(pm: torch.nn.Module, name: str) -> dict[str, torch.Tensor]:
    from peft.tuners.lora import LoraLayer

    out = {}
    for path, mod in pm.named_modules():
        if isinstance(mod, LoraLayer) and name in mod.lora_A:
            out[path.removeprefix("base_model.model.")] = mod.get_delta_weight(name).detach().double()
    return out


def ours_as_peft(base: Path, folder: Path) -> dict[str, torch.Tensor]:
    """Our composed adapter loaded by PEFT itself: proves the saved config and scaling read back as computed."""
    from peft import PeftModel

    return _deltas(PeftModel.from_pretrained(factories.load_model(base), str(folder), adapter_name="ours"), "ours")


@pytest.fixture(scope="module")
def llama_pair(tmp_path_factory: pytest.TempPathFactory, tiny_llama_dir: Path) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("pair")
    a = factories.make_peft_adapter(tiny_llama_dir, d / "a", target_modules=["q_proj", "v_proj"], seed=11, train_steps=1)
    b = factories.make_peft_adapter(tiny_llama_dir, d / "b", target_modules=["q_proj", "v_proj"], lora_alpha=2, seed=12)
    return a, b


@pytest.mark.parametrize(
    ("method", "peft_method", "kw"),
    [
        ("cat", "cat", {}),
        ("linear", "linear", {}),
        ("svd", "svd", {"rank": 3}),
        ("ties", "ties_svd", {"density": 0.6, "rank": 8}),
        ("magnitude_prune", "magnitude_prune_svd", {"density": 0.5, "rank": 8}),
        ("dare_linear", "dare_linear_svd", {"density": 1.0, "seed": 0, "rank": 8}),
    ],
)
def test_matches_peft_add_weighted_adapter(
    method: str, peft_method: str, kw: dict, tiny_llama_dir: Path, llama_pair: tuple[Path, Path], tmp_path: Path
) -> None:
    a, b = llama_pair
    weights = [0.8, -0.5]
    res = compose([(a, weights[0]), (b, weights[1])], method, out=tmp_path / "c", register=False, **kw)
    peft_kw: dict = {"combination_type": peft_method}
    if "rank" in kw:
        peft_kw["svd_rank"] = kw["rank"]
    if "density" in kw:
        peft_kw["density"] = kw["density"]
    ref = peft_deltas(tiny_llama_dir, [(a, weights[0]), (b, weights[1])], **peft_kw)
    ours = ours_as_peft(tiny_llama_dir, tmp_path / "c")
    assert set(ours) == set(ref) and len(ref) == 4
    for k in ref:
        assert close(ours[k], ref[k], rtol=1e-4), k
    assert res.modules == 4


def test_rslora_cat_is_the_true_delta_where_peft_is_off_by_sqrt_r(tiny_llama_dir: Path, tmp_path: Path) -> None:
    """peft#3761: PEFT's cat keeps use_rslora from the first adapter with lora_alpha = r, so its scaling is √r, not 1."""
    a = factories.make_peft_adapter(
        tiny_llama_dir, tmp_path / "a", target_modules=["q_proj"], use_rslora=True, r=4, lora_alpha=8, seed=13
    )
    b = factories.make_peft_adapter(
        tiny_llama_dir, tmp_path / "b", target_modules=["q_proj"], use_rslora=True, r=4, lora_alpha=8, seed=14
    )
    compose([(a, 1.0), (b, 1.0)], "cat", out=tmp_path / "c", register=False)
    ours = ours_as_peft(tiny_llama_dir, tmp_path / "c")
    truth: dict[str, torch.Tensor] = {}
    for folder in (a, b):
        for name, m in load_adapter(folder).modules.items():
            truth[name] = truth.get(name, 0) + m.scaling * (m.lora_B.double() @ m.lora_A.double())
    peft = peft_deltas(tiny_llama_dir, [(a, 1.0), (b, 1.0)], combination_type="cat")
    for k in truth:
        assert close(ours[k], truth[k])
        if not close(peft[k], truth[k]):  # PEFT still wrong: it is off by exactly sqrt(new rank)
            assert close(peft[k], truth[k] * math.sqrt(8))


def test_different_targets_ranks_and_scalings(tiny_llama_dir: Path, tmp_path: Path) -> None:
    a = factories.make_peft_adapter(tiny_llama_dir, tmp_path / "a", target_modules=["q_proj", "v_proj"], r=4, seed=15)
    b = factories.make_peft_adapter(tiny_llama_dir, tmp_path / "b", target_modules=["v_proj", "o_proj"], r=2, use_rslora=True,
                                    rank_pattern={"o_proj": 3}, alpha_pattern={"o_proj": 5}, seed=16)  # fmt: skip
    compose([(a, 1.5), (b, 0.25)], "cat", out=tmp_path / "c", register=False)
    ours = ours_as_peft(tiny_llama_dir, tmp_path / "c")
    truth: dict[str, torch.Tensor] = {}
    for folder, w in ((a, 1.5), (b, 0.25)):
        for name, m in load_adapter(folder).modules.items():
            truth[name] = truth.get(name, 0) + w * m.scaling * (m.lora_B.double() @ m.lora_A.double())
    assert set(ours) == set(truth) and any("o_proj" in k for k in truth) and any("q_proj" in k for k in truth)
    for k in truth:
        assert close(ours[k], truth[k]), k


def test_compose_registers_with_lineage(tiny_llama_dir: Path, llama_pair: tuple[Path, Path]) -> None:
    from adapterhub.store.registry import Registry

    reg = Registry()
    a, b = llama_pair
    ca = reg.add(a, name="t/a", task="qa", base=tiny_llama_dir)
    cb = reg.add(b, name="t/b", task="qa", base=tiny_llama_dir)
    res = compose(["t/a", ("t/b@1", 0.5)], "ties", name="t/mix", density=0.7, rank=4, registry=reg)
    card = reg.get("t/mix")
    assert res.card is not None and res.card.ref == card.ref == "t/mix@1"
    assert card.lineage is not None and card.lineage.method == "compose:ties"
    assert [(p.ref, p.weight) for p in card.lineage.parents] == [(ca.ref, 1.0), (cb.ref, 0.5)]
    assert card.lineage.params == {"rank": 4, "density": 0.7, "majority_sign_method": "total"}
    assert card.lineage.base == ca.base_model.content_hash
    assert card.task == "qa" and card.rank == 4 and card.alpha == 4
    assert set(res.energy) == {m for m in load_adapter(reg.adapter_path("t/mix")).modules}
    assert all(0 < e <= 1 + 1e-9 for e in res.energy.values())
