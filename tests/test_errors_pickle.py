"""Every public error survives pickling (process pools, server workers): same type, same text, same fields."""

from __future__ import annotations

import inspect
import pickle

import pytest

from adapterhub import errors
from adapterhub.errors import AdapterHubError

# Sample values for the constructor arguments the error classes take; a class with an argument not listed here fails.
_SAMPLES: dict[str, object] = {
    "message": "something failed", "ref": "ns/name@3", "why": "bad characters", "what": "adapter ns/name",
    "path": "/tmp/x", "problems": ["module a: missing", "module b: shape"], "adapter": "ns/a", "base": "/models/b",
    "feature": "LoRA on Conv2d", "where": "layer.0", "expected": "abc", "found": "def", "url": "http://hub",
    "tensor": "w", "module": "m", "repo": "ns/r", "revision": "main", "head": "0" * 40, "hint": "do this",
}  # fmt: skip


def _all_subclasses(cls: type) -> list[type]:
    out = [cls]
    for sub in cls.__subclasses__():
        out += _all_subclasses(sub)
    return list(dict.fromkeys(out))


def _make(cls: type[AdapterHubError]) -> AdapterHubError:
    params = [p for p in inspect.signature(cls.__init__).parameters.values() if p.name != "self"]
    args, kwargs = [], {}
    for p in params:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        assert p.name in _SAMPLES, f"{cls.__name__}: no sample value for argument {p.name!r}"
        if p.kind is p.KEYWORD_ONLY:
            kwargs[p.name] = _SAMPLES[p.name]
        else:
            args.append(_SAMPLES[p.name])
    return cls(*args, **kwargs)


PUBLIC_ERRORS = [
    c for c in _all_subclasses(AdapterHubError) if c.__module__ == errors.__name__ and not c.__name__.startswith("_")
]


def test_every_error_class_is_covered() -> None:
    defined = {n for n, c in vars(errors).items() if isinstance(c, type) and issubclass(c, AdapterHubError)}
    assert defined == {c.__name__ for c in PUBLIC_ERRORS}
    assert len(PUBLIC_ERRORS) > 20


@pytest.mark.parametrize("cls", PUBLIC_ERRORS, ids=lambda c: c.__name__)
def test_error_round_trips_through_pickle(cls: type[AdapterHubError]) -> None:
    err = _make(cls)
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is cls
    assert str(back) == str(err)
    assert back.args == err.args
    assert vars(back) == vars(err)  # every field the constructor set: ref, path, problems, repo, ...
    assert back.message == err.message and back.hint == err.hint
    with pytest.raises(cls):
        raise back
