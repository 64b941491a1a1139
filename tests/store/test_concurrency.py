"""Eight processes adding adapters to one registry at the same moment: every add succeeds, versions have no gaps."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

WORKER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from adapterhub.store.registry import Registry
    home, url, folder, start, worker, n = sys.argv[1:7]
    while not Path(start).exists():  # all workers begin together
        time.sleep(0.005)
    reg = Registry(home=home, database_url=url)
    for i in range(int(n)):
        card = reg.add(folder, "race/shared", "t", description=f"w{worker}-{i}", force_new=True)  # same bytes: force a version
        reg.add(folder, f"race/own-{worker}", "t")
        print(card.version, flush=True)
    """
)


def test_eight_processes_add_concurrently(database_url: str, tmp_path: Path, minilm_adapter_dir: Path) -> None:
    procs, per_worker, workers = [], 3, 8
    start = tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    for w in range(workers):
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    WORKER,
                    str(tmp_path / "home"),
                    database_url,
                    str(minilm_adapter_dir),
                    str(start),
                    str(w),
                    str(per_worker),
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
            )  # fmt: skip
        )
    time.sleep(1.0)  # let them all import and wait at the line
    start.touch()
    outputs = [p.communicate(timeout=300) for p in procs]
    for p, (_out, err) in zip(procs, outputs):
        assert p.returncode == 0, err[-2000:]
    versions = sorted(int(v) for out, _ in outputs for v in out.split())
    assert versions == list(range(1, workers * per_worker + 1))

    from adapterhub.store.registry import Registry

    reg = Registry(home=tmp_path / "home", database_url=database_url)
    cards = reg.versions("race/shared")
    assert sorted(c.version for c in cards) == versions
    assert [c.version for c in cards if "latest" in c.aliases] == [workers * per_worker]
    assert len(reg.list()) == workers + 1
    assert reg.fsck().clean
    reg.db.dispose()
