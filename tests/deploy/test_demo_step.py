"""The demo's deploy step on the real SmolLM2 base: the base answers, each fitted adapter answers differently, and
the same requests sent at once get the same answers."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.mark.slow
@pytest.mark.timeout(1800)  # SmolLM2 conversion, two short fits and a server: minutes on a busy 2-core machine
def test_deploy_demo_step(tmp_path: Path, smollm2_dir: Path) -> None:
    from adapterhub.demo import DemoContext
    from adapterhub.demo.deploy_steps import run
    from adapterhub.store.registry import Registry

    lines: list[str] = []
    ctx = DemoContext(Registry(home=tmp_path / "registry"), smollm2_dir, tmp_path, echo=lines.append)
    ctx.results["smollm2_dir"] = str(smollm2_dir)
    run(ctx)
    answers = ctx.results["deploy_answers"]
    assert "Paris" in answers["smollm2"], answers
    assert len(set(answers.values())) == 3, answers
    assert ctx.results["deploy_concurrent_same"], "\n".join(lines)
