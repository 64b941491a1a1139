"""Fixtures for the web page tests: Debian's chromium driven by PyPI playwright (never `playwright install`), and a
real `adapterhub serve` per backend holding pushed adapters: a composed one, a merged base, a private one, and one
whose card carries script. Without chromium or playwright the tests skip locally and fail under CI=true."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from adapterhub.card import EvalScore
from adapterhub.hub.client import PushResult, push
from adapterhub.hub.server.background import BackgroundHub
from adapterhub.store.registry import Registry
from tests.trust.conftest import BACKENDS, fresh_database, hub_registry, serve

CHROMIUM = os.environ.get("ADAPTERHUB_TEST_CHROMIUM", "/usr/bin/chromium")
XSS_CARD = (
    "Careful: this card is hostile.\n\n"
    '<script>window.pwned = 1; document.title = "pwned"</script>\n\n'
    '[click me](javascript:window.pwned=2) and <img src=x onerror="window.pwned=3">\n\n'
    '<a href="#" onclick="window.pwned=4">inline handler</a>'
)


def _missing(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"CI=true but {reason}: .ci/run must install Debian's chromium and the test extra")
    pytest.skip(f"web browser tests need {reason} (apt-get install chromium; pip install playwright)")


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """One headless Debian chromium for the session."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("the playwright package")
    if not (shutil.which(CHROMIUM) or Path(CHROMIUM).is_file()):
        _missing(f"chromium at {CHROMIUM}")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


def cli_token(home: Path, db_url: str | None, namespace: str, scope: str) -> str:
    """A token made the way an admin makes one: `adapterhub token create` (the secret is the first stdout line)."""
    env = {**os.environ, "ADAPTERHUB_HOME": str(home)}
    env.pop("ADAPTERHUB_DATABASE_URL", None)
    if db_url:
        env["ADAPTERHUB_DATABASE_URL"] = db_url
    out = subprocess.run([sys.executable, "-m", "adapterhub", "token", "create", "--namespace", namespace, "--scope", scope],
                         env=env, check=True, capture_output=True, text=True)  # fmt: skip
    return out.stdout.splitlines()[0].strip()


@dataclass
class Site:
    hub: BackgroundHub
    backend: str
    alice_read: str
    pushed: dict[str, PushResult]
    shots: Path  # screenshots of every page, under the test's temp folder


def _acc(value: float, dataset: str = "sst2") -> list[EvalScore]:
    return [EvalScore(dataset=dataset, metric="accuracy", value=value)]


@pytest.fixture(scope="module", params=BACKENDS)
def site(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, minilm_dir: Path, minilm_adapter_dir: Path
) -> Iterator[Site]:
    from adapterhub.lora.compose import compose
    from adapterhub.lora.merge import merge

    with fresh_database(request.param) as db_url:
        home = tmp_path_factory.mktemp(f"web-{request.param}") / "home"
        home.mkdir(parents=True)
        writer = cli_token(home, db_url, "*", "write")
        alice_read = cli_token(home, db_url, "alice", "read")
        with serve(home, db_url, open_hub=False) as hub:
            src = Registry(home=tmp_path_factory.mktemp("web-src"))
            a = minilm_adapter_dir
            src.add(a, "team/sent-a", "sentiment", base=minilm_dir, scores=_acc(0.91) + _acc(0.55, "imdb"), tags=["en"])
            src.add(a, "team/sent-b", "sentiment", base=minilm_dir, scores=_acc(0.85) + _acc(0.60, "imdb"), tags=["en"])
            src.add(a, "team/sent-c", "sentiment", base=minilm_dir, scores=_acc(0.78) + _acc(0.70, "imdb"), tags=["de"])
            src.add(a, "team/ner-a", "ner", base=minilm_dir, scores=[EvalScore(dataset="conll", metric="f1", value=0.8)])
            compose([("team/sent-a", 0.5), ("team/sent-b", 0.5)], "cat", name="team/sent-ab", registry=src, base=minilm_dir,
                    description="The **average** of sent-a and sent-b.")  # fmt: skip
            src.add(a, "team/hostile", "sentiment", base=minilm_dir, description=XSS_CARD)
            src.add(a, "alice/secret", "sentiment", base=minilm_dir, scores=_acc(0.99), description="Alice's private adapter.")
            pushed = {}
            for name in (
                "team/sent-a",
                "team/sent-b",
                "team/sent-c",
                "team/ner-a",
                "team/sent-ab",
                "team/hostile",
                "alice/secret",
            ):
                pushed[name] = push(name, remote=hub.url, registry=src, private=name.startswith("alice/"), token=writer)
            src.db.dispose()
            hub_reg = hub_registry(home, db_url)  # a merged base registered on the hub: lineage from an adapter to a base
            merge(minilm_dir, [("team/sent-a", 1.0)], tmp_path_factory.mktemp("merged") / "out", registry=hub_reg,
                  name="minilm-sent-a", progress=False)  # fmt: skip
            hub_reg.db.dispose()
            shots = tmp_path_factory.mktemp(f"screenshots-{request.param}")
            yield Site(hub=hub, backend=request.param, alice_read=alice_read, pushed=pushed, shots=shots)


@pytest.fixture
def page(browser: Any, site: Site) -> Iterator[Any]:
    """A fresh browser context (no cookies) at desktop width; its console errors are collected in `page.errors`."""
    context = browser.new_context(viewport={"width": 1280, "height": 900}, base_url=site.hub.url)
    pg = context.new_page()
    pg.errors = []
    pg.on("pageerror", lambda exc: pg.errors.append(str(exc)))
    yield pg
    context.close()
