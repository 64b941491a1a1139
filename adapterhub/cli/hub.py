"""Hub commands: `serve` a hub, `push` an adapter to one (or to huggingface.co), `pull` one into the registry."""

from __future__ import annotations

import socket
from pathlib import Path

import click

from ..errors import AdapterHubError
from ._common import json_option, print_json, quiet_option, show_progress


@click.command()
@click.option("--database-url", default=None, help="SQLAlchemy URL of the registry database (default: the one in --storage).")
@click.option("--storage", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Registry home holding the blob store (default: $ADAPTERHUB_HOME).")  # fmt: skip
@click.option("--blobs", default=None, envvar="ADAPTERHUB_BLOBS", metavar="URL",
              help="Where blobs live: s3://BUCKET/PREFIX (endpoint and keys from AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...) "
                   "or a folder (default: blobs/ in --storage). Replicas share one database and one bucket.")  # fmt: skip
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535), help="TCP port.")
@click.option("--token", "tokens", multiple=True, metavar="[USER:]TOKEN",
              help="Also accept this bearer token, with write access everywhere (repeatable). Writes and private "
                   "repositories need a token (these, or `adapterhub token create`) unless --open.")  # fmt: skip
@click.option("--open", "open_hub", is_flag=True,
              help="Open hub: callers without a token may read and write everything, private repositories included. "
                   "For a single-user hub on 127.0.0.1; announced on stderr at start.")  # fmt: skip
@click.option(
    "--page-size", default=1000, show_default=True, type=click.IntRange(1, 100_000), help="Entries per page of listings."
)
@click.option("--max-upload-bytes", default=10 << 30, show_default=True, type=click.IntRange(1), metavar="BYTES",
              help="Refuse a commit whose request body (base64 included) is larger than this, with HTTP 413. "
                   "Every other request body is limited to 1 MiB.")  # fmt: skip
@click.option("--head-timeout", default=10.0, show_default=True, type=click.FloatRange(0.1), metavar="SECONDS",
              help="Close a connection whose request line and headers take longer than this.")  # fmt: skip
@click.option("--body-timeout", default=60.0, show_default=True, type=click.FloatRange(0.1), metavar="SECONDS",
              help="Close a connection whose request body stalls (no bytes) for this long.")  # fmt: skip
@click.option("--keep-alive", default=5.0, show_default=True, type=click.FloatRange(0.1), metavar="SECONDS",
              help="Close a connection idle for this long between requests.")  # fmt: skip
@click.option("--no-redirect", "no_redirect", is_flag=True, envvar="ADAPTERHUB_NO_REDIRECT",
              help="With --blobs on S3: serve big files through the hub instead of redirecting to a presigned URL "
                   "(for clients that cannot reach the bucket's endpoint).")  # fmt: skip
@click.option("--max-connections", default=1000, show_default=True, type=click.IntRange(1),
              help="Answer 503 to requests while this many connections or requests are open.")  # fmt: skip
def serve(database_url: str | None, storage: Path | None, blobs: str | None, host: str, port: int, tokens: tuple[str, ...], open_hub: bool,
          page_size: int, max_upload_bytes: int, head_timeout: float, body_timeout: float, keep_alive: float,
          no_redirect: bool, max_connections: int) -> None:  # fmt: skip
    """Serve the registry over the Hugging Face Hub HTTP API (HF_ENDPOINT=http://HOST:PORT) and its own JSON API.

    Without --open, callers without a token may only read public repositories."""
    from ..hub.server.app import ConnectionLimits
    from ..hub.server.app import serve as run

    _check_port(host, port)
    users = {t.partition(":")[2] or t: (t.partition(":")[0] if ":" in t else "adapterhub") for t in tokens}
    limits = ConnectionLimits(
        head_timeout=head_timeout, body_timeout=body_timeout, keep_alive=keep_alive, max_connections=max_connections
    )
    run(home=storage, database_url=database_url, blobs=blobs, host=host, port=port, tokens=users, page_size=page_size, max_upload_bytes=max_upload_bytes,
        limits=limits, open_hub=open_hub, redirects=not no_redirect, on_ready=lambda url: click.echo(f"adapterhub hub on {url} (Ctrl-C stops)", err=True))  # fmt: skip


def _check_port(host: str, port: int) -> None:
    """A port another process holds: one line and exit 1, before the server starts (uvicorn would log and exit 3)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise AdapterHubError(f"cannot listen on {host}:{port}: {exc.strerror}", hint="check --host") from None
    family, kind, proto, _, addr = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: a port in TIME_WAIT is free
        try:
            probe.bind(addr)
        except OSError as exc:
            raise AdapterHubError(f"cannot listen on {host}:{port}: {exc.strerror or exc}",
                                  hint="stop what holds the port or pick another --port") from None  # fmt: skip


@click.command()
@click.argument("ref")
@click.option("--remote", default=None, metavar="URL", help="Hub URL (default: $HF_ENDPOINT, else https://huggingface.co).")
@click.option("--repo", default=None, metavar="NS/NAME",
              help="Target repository (default: the adapter's own name; required for a model folder).")  # fmt: skip
@click.option("--private", is_flag=True, help="Create the repository as private.")
@click.option("--token", default=None, envvar="HF_TOKEN", help="Access token (default: $HF_TOKEN or the saved login).")
@json_option
def push(ref: str, remote: str | None, repo: str | None, private: bool, token: str | None, as_json: bool) -> None:
    """Upload adapter REF (NAME[@V]) with its card and a model card to a hub, or a model FOLDER (a base, or what
    `adapterhub merge --out` wrote) to --repo, so transformers loads it from there (a progress bar on a terminal)."""
    from ..hub.client import push as run

    show = show_progress() and not as_json
    if _is_model_folder(ref):
        from ..hub.models import push_model

        if repo is None:
            raise click.UsageError("pushing a model folder needs --repo NS/NAME")
        result = push_model(ref, repo=repo, remote=remote, private=private, token=token, progress=show)
    else:
        result = run(ref, remote=remote, repo=repo, private=private, token=token, progress=show)
    tags = f", tags {', '.join(result.tags)}" if result.tags else ""
    print_json(result) if as_json else click.echo(f"{result.ref} -> {result.url} (commit {result.commit}{tags})")


def _is_model_folder(ref: str) -> bool:
    """A folder that is not also the name of a registered adapter (a name wins: `push team/x` pushes the adapter)."""
    from pathlib import Path

    if not Path(ref).expanduser().is_dir():
        return False
    from ..errors import AdapterHubError
    from ..sources import default_registry

    try:
        default_registry().get(ref)
    except (AdapterHubError, ValueError):
        return True
    return False


@click.command()
@click.argument("spec", metavar="REPO[@REV]")
@click.option("--remote", default=None, metavar="URL", help="Hub URL (default: $HF_ENDPOINT, else https://huggingface.co).")
@click.option("--as", "name", default=None, metavar="NS/NAME", help="Register under this name (default: the repository's).")
@click.option("--token", default=None, envvar="HF_TOKEN", help="Access token for private repositories.")
@click.option("--force-new", is_flag=True, help="Record a new version even when the newest local one has the same files.")
@quiet_option
@json_option
def pull(spec: str, remote: str | None, name: str | None, token: str | None, force_new: bool, quiet: bool, as_json: bool) -> None:
    """Download REPO at REV (default main; @2 is tag v2, @prod an alias tag), verify every file, and register it.

    When the newest local version already has exactly these files, that version is returned (and said so)."""
    from ..hub.client import pull as run
    from ..sources import default_registry
    from .registry import newest_version, say_same

    reg = default_registry()
    target = name or spec.partition("@")[0]
    before = None if force_new else newest_version(reg, target)
    card = run(
        spec, remote=remote, name=name, token=token, progress=show_progress() and not as_json, registry=reg, force_new=force_new
    )
    print_json(card) if as_json else click.echo(card.ref)
    if not quiet:
        say_same(card, before)
