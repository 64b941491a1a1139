"""Demo step: serve a hub in the background (closed: writes need a token), create a write token, push the demo's
adapters with it, pull one into a second registry (every file checked against its sha256), search the hub's registry
API, and look at it the way huggingface_hub does."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..card import SearchQuery

if TYPE_CHECKING:
    from . import DemoContext


def run(ctx: DemoContext) -> None:

    # Trained adapters first (their scores travel in the model card), then the seeded ones from step 1.
    trained = ctx.results.get("trained", [])
    trained = list(trained.values()) if isinstance(trained, dict) else list(trained)  # the apply step keeps {task: ref}
    refs = list(dict.fromkeys([*trained, *ctx.results.get("adapters", [])]))
    if not refs:
        ctx.echo("   (no adapters registered by earlier steps: nothing to push)")
        return
    ctx.heading("Hub: `adapterhub serve` in the background (Hugging Face Hub API + registry API)")
    from huggingface_hub import constants

    # The demo talks only to the hub it starts on 127.0.0.1; HF_HUB_OFFLINE (set for model downloads) would refuse
    # that too, so it is lifted for this step only.
    offline, constants.HF_HUB_OFFLINE = constants.HF_HUB_OFFLINE, False
    try:
        _serve_push_pull(ctx, refs)
    finally:
        constants.HF_HUB_OFFLINE = offline


def _serve_push_pull(ctx: DemoContext, refs: list[str]) -> None:
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    from ..hub.client import pull, push, remote_search
    from ..hub.server.background import start_hub
    from ..store.registry import Registry
    from ..store.tokens import TokenStore

    # `adapterhub token create --namespace NS --scope write`, done in the hub's own database before it starts.
    home = ctx.workdir / "hub"
    hub_registry = Registry(home=home)
    tokens = {ns: TokenStore(hub_registry.db).create(ns, "write", label="demo")[1] for ns in dict.fromkeys(r.split("/")[0] for r in refs)}
    hub_registry.db.dispose()
    with start_hub(home) as hub:
        ctx.echo(f"   serving {hub.url}  (HF_ENDPOINT={hub.url} makes huggingface_hub, PEFT and transformers use it)")
        ctx.echo(f"   closed hub: write tokens created for {', '.join(tokens)} (`adapterhub token create --namespace NS --scope write`)")
        try:
            HfApi(endpoint=hub.url, token=False).create_repo(f"{next(iter(tokens))}/anonymous")
            ctx.echo("   anonymous create_repo: accepted (unexpected)")
        except HfHubHTTPError as exc:
            ctx.echo(f"   anonymous create_repo: refused with HTTP {exc.response.status_code}")

        ctx.heading("Hub: push the demo adapters with the token (PEFT files + adapterhub.json card + README model card)")
        pushed = []
        for ref in refs:
            result = push(ref, remote=hub.url, registry=ctx.registry, token=tokens[ref.split("/")[0]])
            pushed.append(result)
            ctx.echo(f"   {result.ref:<28} -> {result.repo_id}  commit {result.commit[:12]}  {sum(f.size for f in result.files):,} B")

        first = pushed[0]
        api = HfApi(endpoint=hub.url)
        info = api.model_info(first.repo_id, files_metadata=True)
        ctx.echo(f"   huggingface_hub sees {first.repo_id}: library={info.card_data.library_name}, "
                 f"base_model={info.card_data.base_model}, tags={info.card_data.tags}")  # fmt: skip
        for s in info.siblings:
            ctx.echo(f"     {s.rfilename:<28} {s.size:>10,} B" + (f"  lfs sha256 {s.lfs.sha256[:12]}" if s.lfs else ""))

        ctx.heading("Hub: pull into a second, empty registry (sizes and sha256 checked before registering)")
        second = Registry(home=ctx.workdir / "registry-2")
        card = pull(first.repo_id, remote=hub.url, registry=second)
        same = {(f.path, f.sha256) for f in card.files} == {(f.path, f.sha256) for f in first.files}
        ctx.echo(f"   {card.ref}: task={card.task}, rank={card.rank}, base={card.base_model.name if card.base_model else '-'}, "
                 f"files identical to the pushed ones: {same}")  # fmt: skip
        ctx.results["pulled"] = card.ref

        ctx.heading("Hub: search the hub's registry by task")
        task = ctx.registry.get(first.ref).task
        found = remote_search(hub.url, SearchQuery(task=task))
        ctx.echo(f"   task={task}: " + ", ".join(c.ref for c in found.items))
        tagged = [m.id for m in api.list_models(filter="adapterhub")]
        ctx.echo(f"   list_models(filter='adapterhub'): {', '.join(sorted(tagged))}")
    ctx.echo("   hub stopped")
