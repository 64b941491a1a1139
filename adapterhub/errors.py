"""Every error adapterhub raises on purpose.

Each class inherits `AdapterHubError` and the built-in exception it is closest to, so callers can catch either.
The message is one line: what is wrong, then what to do about it (`hint`). The CLI prints `str(err)` and exits 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def _rebuild(cls: type[AdapterHubError], args: tuple[Any, ...], state: dict[str, Any]) -> AdapterHubError:
    """Unpickle an error without calling its `__init__` (whose signature differs per class): same type, text, fields."""
    # the __new__ of the base that fixes the instance layout (OSError's for FileExistsError...); `cls.__new__` would
    # find MemoryError.__new__ by MRO for CacheFull, which refuses subclasses
    err = cls.__base__.__new__(cls, *args)
    Exception.__init__(err, *args)
    err.__dict__.update(state)
    return err


class AdapterHubError(Exception):
    """Base class: a failure adapterhub anticipated and can explain in one line.

    Every subclass pickles (process pools, server workers): `__reduce__` restores the message and the fields its
    `__init__` set, whatever that `__init__` takes."""

    hint: str = ""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        if hint is not None:
            self.hint = hint
        # one line always, even when a file name, tensor key or config key carries a newline
        message = message.replace("\r", "\\r").replace("\n", "\\n")
        self.message = message
        super().__init__(f"{message}; {self.hint}" if self.hint else message)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.args, dict(self.__dict__)))


class UsageError(AdapterHubError, ValueError):
    """An argument has the wrong form (a bad reference, an unknown method): exit 2 in the CLI."""


class InvalidReference(UsageError):
    """A name or reference that is not `namespace/name[@version|@alias]` or contains unsafe characters."""

    def __init__(self, ref: str, why: str, *, what: str = "reference", hint: str | None = None) -> None:
        self.ref = ref
        super().__init__(
            f"invalid {what} {ref!r}: {why}",
            hint=hint or "use namespace/name[@version|@alias] with letters, digits, '-', '_' and '.'",
        )


class NotFound(AdapterHubError, LookupError):
    """Something looked up by name does not exist."""


class AdapterNotFound(NotFound):
    def __init__(self, ref: str, *, hint: str | None = None) -> None:
        self.ref = ref
        super().__init__(
            f"adapter {ref!r} not found", hint=hint or "run `adapterhub ls` or `adapterhub search` to see what exists"
        )


class BaseModelNotFound(NotFound):
    def __init__(self, ref: str) -> None:
        self.ref = ref
        super().__init__(
            f"base model {ref!r} not found",
            hint="pass a model folder or .safetensors file, or a hash/name of a base already registered",
        )


class InvalidFile(AdapterHubError, ValueError):
    """A file or folder that cannot be used as it is: lists every problem found."""

    default_hint = "check the file; re-save it with safetensors and try again"

    def __init__(self, path: str, problems: Sequence[str], *, hint: str | None = None) -> None:
        self.path = str(path)
        self.problems = list(problems)
        shown = "; ".join(self.problems[:5]) + (f"; and {len(self.problems) - 5} more" if len(self.problems) > 5 else "")
        super().__init__(f"{self.what} at {self.path}: {shown}", hint=hint or self.default_hint)

    what = "invalid file"


class InvalidAdapter(InvalidFile):
    """An adapter folder that is not a usable PEFT LoRA adapter."""

    what = "invalid adapter"
    default_hint = "re-save it with PEFT's save_pretrained (safetensors) and try again"


class InvalidModel(InvalidFile):
    """A base-model path that is not a readable safetensors model."""

    what = "cannot read model"
    default_hint = "pass a folder with model.safetensors (or an index), or a single .safetensors file"


class PickleRefused(InvalidFile):
    """A pickle checkpoint: loading one can run arbitrary code, so adapterhub never does."""

    what = "refused pickle checkpoint"

    def __init__(self, path: str) -> None:
        super().__init__(
            path,
            ["pickle checkpoints (.bin/.pt) are refused because unpickling can execute arbitrary code"],
            hint="convert it once, in a trusted environment, with save_pretrained(..., safe_serialization=True)",
        )


class IncompatibleAdapter(AdapterHubError, ValueError):
    """The adapter does not fit the base model: names each mismatching module."""

    def __init__(self, adapter: str, base: str, problems: Sequence[str]) -> None:
        self.adapter = adapter
        self.base = base
        self.problems = list(problems)
        shown = "; ".join(self.problems[:5]) + (f"; and {len(self.problems) - 5} more" if len(self.problems) > 5 else "")
        super().__init__(
            f"adapter {adapter} does not fit base {base}: {shown}",
            hint="use the base model it was trained on (see `adapterhub show`)",
        )


class UnsupportedFeature(AdapterHubError, NotImplementedError):
    """A PEFT feature adapterhub cannot apply; raised before anything is changed."""

    def __init__(self, feature: str, *, where: str = "", hint: str | None = None) -> None:
        self.feature = feature
        super().__init__(
            f"unsupported: {feature}" + (f" ({where})" if where else ""),
            hint=hint or "use plain LoRA/DoRA on Linear, Conv1D or Embedding layers",
        )


class IntegrityError(AdapterHubError, ValueError):
    """Bytes that do not match their recorded size or sha256."""

    def __init__(self, what: str, expected: str, found: str) -> None:
        self.what = what
        self.expected = expected
        self.found = found
        super().__init__(
            f"integrity check failed for {what}: expected {expected}, found {found}",
            hint="nothing was registered; fetch it again or run `adapterhub fsck`",
        )


class AlreadyExists(AdapterHubError, FileExistsError):
    def __init__(self, what: str, *, hint: str | None = None) -> None:
        self.what = what
        super().__init__(f"{what} already exists", hint=hint or "choose another name or remove the old one first")


class StoreError(AdapterHubError, RuntimeError):
    """The metadata store or blob store is unusable (bad URL, migration failure)."""


class DatabaseBusy(StoreError):
    """The database's write lock stayed taken past the busy timeout (HTTP 503 with Retry-After); nothing was written."""

    def __init__(self, what: str = "the database is busy: another writer held its lock too long") -> None:
        super().__init__(what, hint="nothing was written; retry in a minute")


class StorageFull(StoreError):
    """The disk under the blob store or upload scratch is full (HTTP 507 with Retry-After); nothing was kept."""

    def __init__(self, what: str = "no space left on the storage device") -> None:
        super().__init__(what, hint="nothing was stored; free disk space (`adapterhub gc`) and retry")


class RemoteError(AdapterHubError, ConnectionError):
    """A hub could not be reached or answered with an error."""

    def __init__(self, url: str, why: str, *, hint: str | None = None) -> None:
        self.url = url
        super().__init__(f"hub {url}: {why}", hint=hint or "check the URL, the server and your token, then retry")


class PermissionDenied(AdapterHubError, PermissionError):
    def __init__(self, what: str, *, hint: str | None = None) -> None:
        self.what = what
        super().__init__(f"permission denied: {what}", hint=hint or "use a token with write scope for that namespace")


class NonFiniteResult(AdapterHubError, ArithmeticError):
    """A merged or composed tensor holds NaN/Inf: names the adapter and module that produced it."""

    def __init__(self, tensor: str, adapter: str, module: str) -> None:
        self.tensor = tensor
        self.adapter = adapter
        self.module = module
        super().__init__(
            f"tensor {tensor} is not finite after adding adapter {adapter} (module {module})",
            hint="nothing was written; check the adapter with `adapterhub validate`, or merge in float32 if it overflowed",
        )


# --- the hub (adapterhub serve / push / pull) ------------------------------------------------------------------


class RepoNotFound(NotFound):
    """A hub repository `namespace/name` that does not exist (HTTP 404, X-Error-Code: RepoNotFound)."""

    def __init__(self, repo: str) -> None:
        self.repo = repo
        super().__init__(f"hub repository {repo!r} not found", hint="check the name, or create it with `adapterhub push`")


class RevisionNotFound(NotFound):
    """A branch or commit id that a hub repository does not have (X-Error-Code: RevisionNotFound)."""

    def __init__(self, repo: str, revision: str) -> None:
        self.repo = repo
        self.revision = revision
        super().__init__(
            f"revision {revision!r} not found in {repo}",
            hint="use a branch (main), a tag (v1, v2, ... or an alias such as prod) or a full 40-hex commit id",
        )


class EntryNotFound(NotFound):
    """A file path absent from one revision of a hub repository (X-Error-Code: EntryNotFound)."""

    def __init__(self, repo: str, revision: str, path: str) -> None:
        self.repo = repo
        self.revision = revision
        self.path = path
        super().__init__(f"file {path!r} not found in {repo}@{revision}", hint="list the files with `list_repo_files`")


class CommitConflict(AdapterHubError, RuntimeError):
    """A commit whose parentCommit is no longer the branch head: someone else committed first (HTTP 409)."""

    def __init__(self, repo: str, expected: str, head: str | None) -> None:
        self.repo = repo
        self.expected = expected
        self.head = head
        super().__init__(
            f"commit to {repo} expected parent {expected} but the branch head is {head}",
            hint="fetch the new head and commit again on top of it",
        )


class CacheFull(AdapterHubError, MemoryError):
    """An adapter cannot be made resident within the cache's byte budget (too big, or the rest is pinned)."""

    hint = "raise budget_bytes, or unpin adapters"


class Unauthenticated(PermissionDenied):
    """No valid token where the hub requires one (HTTP 401); PermissionDenied proper means a token lacking rights (403)."""


class PayloadTooLarge(UsageError):
    """A request body over the hub's `--max-upload-bytes` (HTTP 413); nothing of it is kept."""
