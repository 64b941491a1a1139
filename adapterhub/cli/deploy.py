"""`adapterhub deploy BASE`: load one base and serve it, with any registered adapter per request, over the OpenAI API."""

from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.argument("base", type=click.Path(file_okay=False, path_type=Path))
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(1, 65535), help="TCP port.")
@click.option("--name", default=None, help="The base's model name in requests (default: the folder's name).")
@click.option("--remote", default=None, envvar="ADAPTERHUB_REMOTE", metavar="HUB_URL",
              help="Pull adapters missing from the local registry from this hub (every byte verified).")  # fmt: skip
@click.option("--token", default=None, envvar="ADAPTERHUB_TOKEN", help="Token for the remote hub (private adapters).")
@click.option("--adapters", "adapters", multiple=True, metavar="REF", help="Load and pin these adapters at start (repeatable).")
@click.option("--cache-bytes", default=1 << 30, show_default=True, type=click.IntRange(1), metavar="N",
              help="Byte budget of resident adapters; least recently used are detached beyond it.")  # fmt: skip
@click.option("--max-batch", default=16, show_default=True, type=click.IntRange(1, 1024), help="Rows in one forward at most.")
@click.option("--batch-window-ms", default=10.0, show_default=True, type=click.FloatRange(0, 10_000),
              help="How long an idle server waits for more requests to batch with the first.")  # fmt: skip
@click.option("--api-key", default=None, envvar="ADAPTERHUB_API_KEY", help="Require this bearer key from callers.")
@click.option("--dtype", default=None, help="Load the base in this dtype (float32, bfloat16, float16; default: as saved).")
@click.option("--device", default=None, help="Run the base on this torch device (cpu, cuda, cuda:1; default: cpu).")
@click.option("--threads", default=None, type=click.IntRange(1, 1024),
              help="torch threads for the forward passes (default: torch's; 1 is fastest on a busy machine).")  # fmt: skip
@click.option("--max-body-bytes", default=1 << 20, show_default=True, type=click.IntRange(1024), help="Largest request body.")
def deploy(base: Path, host: str, port: int, name: str | None, remote: str | None, token: str | None, adapters: tuple[str, ...],
           cache_bytes: int, max_batch: int, batch_window_ms: float, api_key: str | None, dtype: str | None,
           device: str | None, threads: int | None, max_body_bytes: int) -> None:  # fmt: skip
    """Serve BASE (a model folder) over the OpenAI API: /v1/chat/completions, /v1/completions, /v1/embeddings."""
    from ..deploy.app import build_state, serve

    if threads is not None:
        import torch

        torch.set_num_threads(threads)

    state = build_state(base, name=name, remote=remote, token=token, adapters=adapters, cache_bytes=cache_bytes,
                        max_batch=max_batch, window_ms=batch_window_ms, api_key=api_key, dtype=dtype, device=device,
                        max_body=max_body_bytes)  # fmt: skip
    serve(
        state,
        host=host,
        port=port,
        on_ready=lambda url: click.echo(f"adapterhub deploy: {state.base_name} on {url}/v1 (Ctrl-C stops)", err=True),
    )
