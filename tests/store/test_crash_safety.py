"""SIGKILL at many points of `adapterhub add`: the registry stays consistent (fsck clean), no partial file sits at a
final path, and running the command again succeeds."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from adapterhub.store.registry import Registry
from tests.factories import write_large_adapter

KILL_POINTS = 12


def _assert_consistent(home: Path) -> None:
    reg = Registry(home=home)
    report = reg.fsck()
    assert report.clean, (report.missing, report.corrupt)
    for digest in reg.blobs.iter_digests():  # every blob at a final path is complete
        assert hashlib.sha256(reg.blobs.path(digest).read_bytes()).hexdigest() == digest
    versions = sorted(c.version for c in reg.versions("crash/a"))
    # a version number is issued in the same transaction as its row: a killed add leaves no gap
    assert versions == list(range(1, len(versions) + 1))
    reg.db.dispose()


@pytest.mark.slow
def test_sigkill_during_add_at_many_points(tmp_path: Path) -> None:
    folder = write_large_adapter(tmp_path / "big", layers=12, width=4096)  # ~48 MB: slow enough to interrupt
    exe = str(Path(sys.executable).with_name("adapterhub"))
    home = tmp_path / "home"
    env = {**os.environ, "ADAPTERHUB_HOME": str(home)}
    cmd = [exe, "add", str(folder), "--name", "crash/a", "--task", "t"]
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, capture_output=True)
    full = time.perf_counter() - t0
    for i in range(KILL_POINTS):
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        time.sleep(full * (i + 0.5) / KILL_POINTS)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        _assert_consistent(home)
    # after all the kills, the command still works and numbering continues without duplicates
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout.strip()
    reg = Registry(home=home)
    versions = [c.version for c in reg.versions("crash/a")]
    assert out == f"crash/a@{max(versions)}"
    assert sorted(versions) == list(range(1, len(versions) + 1))
    reg.gc(grace_seconds=0)
    assert reg.fsck().clean and reg.fsck().orphans == []
