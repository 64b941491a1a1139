"""The public API is pinned: adding or removing a name is a deliberate change to this list."""

from __future__ import annotations

import subprocess
import sys

import adapterhub

PUBLIC = [
    "AdapterCache", "AdapterCard", "AdapterHubError", "AdapterNotFound", "AdapterRef", "BaseModelInfo",
    "CompatibilityReport", "EvalScore", "FileEntry", "Fingerprint", "IncompatibleAdapter", "IntegrityError",
    "InvalidAdapter", "Lineage", "ParentLink", "PickleRefused", "Registry", "SearchQuery", "SearchResult",
    "UnsupportedFeature", "activation", "add_trainable", "attach", "check_adapter", "compose", "detach", "extract",
    "fuse", "list_adapters", "load", "load_adapter", "merge", "pull", "push", "remote_search", "route",
    "save_adapter", "set_active", "tune", "evaluate", "unfuse", "validate",
]  # fmt: skip


def test_all_is_pinned() -> None:
    assert adapterhub.__all__ == sorted(PUBLIC)


def test_every_public_name_resolves() -> None:
    for name in adapterhub.__all__:
        assert getattr(adapterhub, name) is not None, name


def test_import_is_light() -> None:
    code = "import sys, adapterhub; print(sorted(m for m in ('torch', 'sqlalchemy', 'transformers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"


def test_errors_inherit_the_matching_builtin() -> None:
    from adapterhub import errors

    assert issubclass(errors.AdapterNotFound, LookupError)
    assert issubclass(errors.InvalidAdapter, ValueError)
    assert issubclass(errors.IntegrityError, ValueError)
    assert issubclass(errors.UnsupportedFeature, NotImplementedError)
    assert issubclass(errors.RemoteError, ConnectionError)
    assert issubclass(errors.PermissionDenied, PermissionError)
    assert issubclass(errors.AlreadyExists, FileExistsError)


def test_public_functions_are_not_shadowed_by_submodules() -> None:
    """`adapterhub.validate` must stay the function even after every submodule has been imported."""
    import importlib
    import pkgutil

    for info in pkgutil.walk_packages(adapterhub.__path__, "adapterhub."):
        if not info.name.startswith(("adapterhub.demo", "adapterhub.hub.server", "adapterhub.__main__")):
            importlib.import_module(info.name)
    for name in adapterhub.__all__:
        assert not isinstance(getattr(adapterhub, name), type(adapterhub)), f"adapterhub.{name} is a module"
