"""Where adapterhub keeps its data: one home folder (`$ADAPTERHUB_HOME`), with caches under it."""

from __future__ import annotations

import os
from pathlib import Path

HOME_ENV = "ADAPTERHUB_HOME"


def adapterhub_home() -> Path:
    """`$ADAPTERHUB_HOME` when set (tests and servers pin it), else the platform's per-user data folder."""
    env = os.environ.get(HOME_ENV)
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("adapterhub"))


def cache_dir(*parts: str) -> Path:
    """A folder under `<home>/cache/`; not created here (callers create it when they first write)."""
    return adapterhub_home().joinpath("cache", *parts)
