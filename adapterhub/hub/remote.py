"""What a failed request to a hub becomes: one line with the hub's own message and what to do (issue 11: a bad token
on an existing repository printed 80 lines ending in huggingface_hub's `HfUriError`). `push`, `pull` and the
streamed upload all wrap their requests in `remote_errors`; the CLI prints the line and exits 1."""

from __future__ import annotations

import contextlib
import unicodedata
from collections.abc import Iterator
from typing import Any

from ..errors import EntryNotFound, PermissionDenied, RemoteError, RepoNotFound, RevisionNotFound, Unauthenticated


def server_message(response: Any) -> str:
    """The hub's own one-line message for a failed request: `X-Error-Message` (adapterhub and huggingface.co send
    it), else the JSON body's `error`, else the body's first line, else the HTTP reason."""
    msg = response.headers.get("X-Error-Message") or ""
    if not msg:
        try:
            body = response.json()
            msg = str(body.get("error") or "") if isinstance(body, dict) else ""
        except Exception:  # noqa: BLE001 - any body that is not JSON (an HTML error page, a stream)
            msg = ""
    if not msg:
        with contextlib.suppress(Exception):
            msg = (response.text or "").strip()
        msg = "" if msg.startswith("<") else msg  # an HTML page says nothing useful in one line
    msg = "".join(c for c in msg if unicodedata.category(c)[0] != "C" or c in "\n\t")  # no terminal escapes from a hub
    msg = " ".join((msg.splitlines() or [""])[0].split())[:300]
    msg = msg[len("permission denied: ") :] if msg.startswith("permission denied: ") else msg  # said once, by PermissionDenied
    return msg or str(getattr(response, "reason_phrase", "") or "no message")


# What to do after each kind of failure, for the one line a push or pull error prints.
_FIX_401 = "pass --token or set HF_TOKEN to a valid token (write scope for push; `adapterhub token create` on the hub)"
_FIX_403 = "use a token with {scope} scope for namespace {namespace!r}"
_FIX_413 = "the hub refuses bodies this large: push smaller files, or ask its operator to raise `serve --max-upload-bytes`"
_FIX_5XX = "the hub failed on its side: retry{later}, or ask its operator to check the server's log"


@contextlib.contextmanager
def remote_errors(endpoint: str, repo_id: str, revision: str = "main", *, write: bool = False) -> Iterator[None]:
    """huggingface_hub's and the transport's exceptions -> adapterhub's: one line each, with the hub's own message
    and what to do (the CLI prints it and exits 1, no traceback)."""
    import httpx2
    from huggingface_hub import errors as hf

    try:
        yield
    except hf.RepositoryNotFoundError:
        raise RepoNotFound(repo_id) from None
    except hf.RevisionNotFoundError:
        raise RevisionNotFound(repo_id, revision) from None
    except hf.RemoteEntryNotFoundError as exc:
        raise EntryNotFound(repo_id, revision, str(exc.response.url).rsplit("/", 1)[-1] if exc.response else "?") from None
    except hf.HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else None
        said = server_message(exc.response) if exc.response is not None else str(exc).splitlines()[0]
        namespace = repo_id.partition("/")[0]
        if status == 401:
            raise Unauthenticated(f"{repo_id} on {endpoint}: {said} (HTTP 401)", hint=_FIX_401) from None
        if status == 403:
            scope = "write" if write else "read"
            raise PermissionDenied(f"{repo_id} on {endpoint}: {said} (HTTP 403)",
                                   hint=_FIX_403.format(scope=scope, namespace=namespace)) from None  # fmt: skip
        if status == 404:
            raise RemoteError(endpoint, f"{said} (HTTP 404)", hint="check the --remote URL and the repository name") from None
        if status == 409:
            fix = "push again on top of the new head" if write else "retry: the repository changed while reading it"
            raise RemoteError(endpoint, f"{repo_id}: {said} (HTTP 409)", hint=fix) from None
        if status == 413:
            raise RemoteError(endpoint, f"{repo_id}: {said} (HTTP 413)", hint=_FIX_413) from None
        if status is not None and status >= 500:
            after = exc.response.headers.get("Retry-After") if exc.response is not None else None
            later = f" in {after} s" if after and after.isdigit() else " later"
            raise RemoteError(endpoint, f"{repo_id}: {said} (HTTP {status})", hint=_FIX_5XX.format(later=later)) from None
        raise RemoteError(endpoint, f"{repo_id}: {said} (HTTP {status})") from None
    except (httpx2.TransportError, ConnectionError) as exc:
        why = "connection refused" if isinstance(exc, (httpx2.ConnectError, ConnectionRefusedError)) else type(exc).__name__
        raise RemoteError(endpoint, f"cannot reach the hub ({why}: {' '.join(str(exc).split())[:200]})",
                          hint="is the hub running at that URL? check --remote / $HF_ENDPOINT, then retry") from None  # fmt: skip
    except hf.HfUriError as exc:  # huggingface_hub could not parse a URL the hub sent back
        raise RemoteError(endpoint, f"unexpected answer from the hub ({str(exc).splitlines()[0][:200]})") from None
