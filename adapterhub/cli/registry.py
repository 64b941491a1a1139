"""Registry commands: add, ls, show, search, score, rm, tag, untag, export, gc, fsck, bases. None imports torch."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ..card import AdapterCard, AdapterRef, EvalScore, ScoreSource, SearchQuery
from ..errors import AdapterNotFound, InvalidReference, UsageError
from ._common import json_option, print_json, print_refs, print_table, quiet_option

if TYPE_CHECKING:
    from ..store.registry import Registry

# Metrics where smaller is better; anything else is taken as higher-is-better.
LOWER_IS_BETTER = {"loss", "perplexity", "ppl", "error", "wer", "cer", "mse", "mae", "rmse", "eval_loss"}


def _registry() -> Registry:
    from ..sources import default_registry

    return default_registry()


def parse_metric(text: str) -> EvalScore:
    """`DATASET/METRIC[:SPLIT]=VALUE`, e.g. `sst2/accuracy=0.91` or `wikitext/perplexity:validation=12.3`."""
    key, sep, value = text.rpartition("=")
    dataset, slash, metric = key.partition("/")
    metric, _, split = metric.partition(":")
    try:
        number = float(value)
    except ValueError:
        number = None
    if not sep or not slash or not dataset or not metric or number is None:
        raise UsageError(f"bad metric {text!r}", hint="use DATASET/METRIC[:SPLIT]=VALUE, e.g. sst2/accuracy=0.91")
    return EvalScore(
        dataset=dataset,
        metric=metric,
        split=split or "test",
        value=number,
        higher_is_better=metric.lower() not in LOWER_IS_BETTER,
    )


def _parse_threshold(text: str) -> tuple[str, float]:
    s = parse_metric(text)
    return s.key, s.value


def _rows(cards: list[AdapterCard]) -> list[list[object]]:
    return [
        [c.ref, ",".join(a for a in c.aliases if a != "latest"), c.task, c.method.value, c.rank,
         (c.base_model.name if c.base_model else ""),
         " ".join(f"{s.key}={s.value:.4g}{'*' if s.source is ScoreSource.MEASURED else ''}" for s in c.scores)]
        for c in cards
    ]  # fmt: skip


HEADERS = ["adapter", "aliases", "task", "method", "rank", "base", "scores"]


def newest_version(reg: Registry, name: str) -> int | None:
    """The newest version number of `name` now, None when it has none: after an add or pull, a card whose version is
    not above it is an existing version returned because its files were the same."""
    try:
        return reg.get(AdapterRef.parse(name).full_name).version
    except (AdapterNotFound, InvalidReference):  # a bad name is the add's or pull's own error to report
        return None


def say_same(card: AdapterCard, before: int | None) -> None:
    """On stderr: an add or pull found these files already registered and recorded nothing new."""
    if before is not None and card.version <= before:
        click.echo(f"{card.ref} already has these files (same sha256); returned it instead of a new version "
                   "(--force-new records one anyway)", err=True)  # fmt: skip


@click.command()
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--name", required=True, help="namespace/name; each add creates the next version.")
@click.option("--task", required=True, help="What the adapter is for, e.g. sentiment.")
@click.option(
    "--base", type=click.Path(exists=True, path_type=Path), help="Base model folder/file: fingerprint it and check shapes."
)
@click.option("--metric", "metrics", multiple=True, help="DATASET/METRIC[:SPLIT]=VALUE (repeatable).")
@click.option("--tag", "tags", multiple=True, help="A tag (repeatable).")
@click.option("--alias", "aliases", multiple=True, help="Point an alias (e.g. prod) at the new version.")
@click.option("--description", default="", help="One line about the adapter.")
@click.option("--license", "license_", default=None, help="SPDX license id, e.g. apache-2.0.")
@click.option("--force-new", is_flag=True, help="Record a new version even when the newest one has the same files.")
@quiet_option
@json_option
def add(folder: Path, name: str, task: str, base: Path | None, metrics: tuple[str, ...], tags: tuple[str, ...],
        aliases: tuple[str, ...], description: str, license_: str | None, force_new: bool, quiet: bool, as_json: bool) -> None:  # fmt: skip
    """Register the PEFT adapter in FOLDER as the next version of NAME.

    When the newest version of NAME already has exactly these files, that version is returned (and said so on
    stderr) instead of a copy; --alias still moves to it."""
    scores = [parse_metric(m) for m in metrics]
    reg = _registry()
    before = None if force_new else newest_version(reg, name)
    card = reg.add(folder, name, task, base=base, scores=scores, tags=tags, description=description, license=license_,
                   aliases=aliases, force_new=force_new)  # fmt: skip
    print_json(card) if as_json else click.echo(card.ref)
    if not quiet:
        say_same(card, before)


@click.command()
@click.option("--all", "all_versions", is_flag=True, help="Every version, not only the newest of each name.")
@click.option("--namespace", default=None, help="Only this namespace.")
@quiet_option
@json_option
def ls(all_versions: bool, namespace: str | None, quiet: bool, as_json: bool) -> None:
    """List adapters, newest first."""
    cards = _registry().list(namespace=namespace, all_versions=all_versions)
    if as_json:
        print_json(cards)
    elif quiet:
        print_refs([c.ref for c in cards])
    else:
        print_table(HEADERS, _rows(cards))


@click.command()
@click.argument("ref")
@json_option
def show(ref: str, as_json: bool) -> None:
    """Show one adapter's card: NAME[@VERSION|@ALIAS]."""
    card = _registry().get(ref)
    if as_json:
        print_json(card)
        return
    click.echo(click.style(card.ref, bold=True) + (f"  ({', '.join(card.aliases)})" if card.aliases else ""))
    for line in card.summary_lines():
        click.echo("  " + line)


@click.command()
@click.argument("text", required=False)
@click.option("--task", default=None, help="Only adapters for this task, e.g. sentiment (exact match).")
@click.option("--base", default=None, help="Base model folder, hash prefix (6+ hex), or the name of a base fingerprinted here.")
@click.option("--rank-min", type=int, default=None, help="Only adapters of at least this LoRA rank.")
@click.option("--rank-max", type=int, default=None, help="Only adapters of at most this LoRA rank.")
@click.option("--min", "mins", multiple=True, help="DATASET/METRIC=VALUE: at least this good (repeatable).")
@click.option("--tag", "tags", multiple=True, help="Only adapters with this tag (repeatable: all of them).")
@click.option("--sort", default=None, help="DATASET/METRIC: best first (default: newest first).")
@click.option("--limit", type=click.IntRange(1, 1000), default=20, show_default=True, help="Show at most this many.")
@click.option("--all-versions", is_flag=True, help="Match every version, not only the newest of each name.")
@click.option("--measured", is_flag=True, help="Only adapters with scores measured by `adapterhub eval`; --min/--sort use those.")
@click.option("--remote", default=None, metavar="URL", help="Search an `adapterhub serve` hub instead of the local registry.")
@quiet_option
@json_option
def search(text: str | None, task: str | None, base: str | None, rank_min: int | None, rank_max: int | None,
           mins: tuple[str, ...], tags: tuple[str, ...], sort: str | None, limit: int, all_versions: bool,
           measured: bool, remote: str | None, quiet: bool, as_json: bool) -> None:  # fmt: skip
    """Find adapters by TEXT (in the name, task, description and tags), task, base model, rank, scores and tags."""
    query = SearchQuery(
        text=text, task=task, base=base, rank_min=rank_min, rank_max=rank_max,
        min_scores=dict(_parse_threshold(m) for m in mins), tags=list(tags), sort=sort, limit=limit, all_versions=all_versions,
        measured=measured,
    )  # fmt: skip
    if remote:
        from ..hub.client import remote_search

        result = remote_search(remote, query)
    else:
        result = _registry().search(query)
    if as_json:
        print_json(result)
        return
    if quiet:
        print_refs([c.ref for c in result.items])
        return
    print_table(HEADERS, _rows(result.items))
    if any(s.source is ScoreSource.MEASURED for c in result.items for s in c.scores):
        click.echo("(* measured by adapterhub eval; other scores are reported)")
    if result.total > len(result.items):
        click.echo(f"({len(result.items)} of {result.total} shown; use --limit)")


@click.command()
@click.argument("ref")
@click.option("--metric", "metrics", multiple=True, required=True, help="DATASET/METRIC[:SPLIT]=VALUE (repeatable).")
@json_option
def score(ref: str, metrics: tuple[str, ...], as_json: bool) -> None:
    """Record reported scores on the existing version REF; a reported score for the same dataset/metric/split replaces
    the old one (measured scores come from `adapterhub eval`)."""
    card = _registry().record_scores(ref, [parse_metric(m) for m in metrics], source=ScoreSource.REPORTED)  # typed in
    if as_json:
        print_json(card)
        return
    click.echo(card.ref + ": " + ", ".join(f"{s.key}={s.value:.4g}" for s in card.scores))


@click.command()
@click.argument("ref")
@click.option("--yes", "-y", is_flag=True, help="Do not ask before removing every version of a name.")
@quiet_option
@json_option
def rm(ref: str, yes: bool, quiet: bool, as_json: bool) -> None:
    """Remove NAME@VERSION, NAME@ALIAS, or every version of NAME (asks first on a terminal). Files are freed by
    `adapterhub gc`."""
    reg = _registry()
    r = AdapterRef.parse(ref)
    if r.version is None and r.alias is None and not yes:
        if not sys.stdin.isatty():
            raise UsageError(f"`rm {ref}` removes every version of {ref}; pass --yes to confirm",
                             hint=f"or remove one version: {ref}@VERSION")  # fmt: skip
        versions = reg.versions(ref)
        click.confirm(
            f"remove every version of {ref} ({', '.join('@' + str(c.version) for c in versions)})?", abort=True, err=True
        )
    removed = reg.remove(ref)
    if as_json:
        print_json(removed)
    elif quiet:
        print_refs([c.ref for c in removed])
    else:
        click.echo("removed " + ", ".join(c.ref for c in removed))


@click.command()
@click.argument("ref")
@click.argument("alias")
@json_option
def tag(ref: str, alias: str, as_json: bool) -> None:
    """Point ALIAS (e.g. prod) at REF; it moves if it pointed elsewhere."""
    card = _registry().tag(ref, alias)
    print_json(card) if as_json else click.echo(f"{card.full_name}@{alias} -> {card.ref}")


@click.command()
@click.argument("name", metavar="NAME[@ALIAS]")
@click.argument("alias", required=False)
@json_option
def untag(name: str, alias: str | None, as_json: bool) -> None:
    """Remove ALIAS (e.g. prod) from NAME: `untag team/qv prod` or `untag team/qv@prod`. The version stays."""
    r = AdapterRef.parse(name)
    alias = alias or r.alias
    if alias is None or (r.alias is not None and r.alias != alias) or r.version is not None:
        raise UsageError(f"untag takes NAME ALIAS or NAME@ALIAS, not {name!r}" + (f" {alias}" if alias else ""))
    _registry().untag(r.full_name, alias)
    print_json({"name": r.full_name, "alias": alias, "removed": True}) if as_json else click.echo(
        f"removed {r.full_name}@{alias}"
    )


@click.command()
@click.argument("ref")
@click.argument("dest", type=click.Path(path_type=Path))
@click.option("--force", is_flag=True, help="Replace DEST if it exists.")
@json_option
def export(ref: str, dest: Path, force: bool, as_json: bool) -> None:
    """Write REF's PEFT files to DEST (loadable by PeftModel.from_pretrained)."""
    folder = _registry().export(ref, dest, overwrite=force)
    print_json({"ref": ref, "path": str(folder)}) if as_json else click.echo(str(folder))


@click.command()
@click.option("--dry-run", is_flag=True, help="Only list what would be removed.")
@click.option("--grace", type=float, default=600.0, show_default=True, help="Keep blobs younger than this many seconds.")
@json_option
def gc(dry_run: bool, grace: float, as_json: bool) -> None:
    """Remove stored files that no adapter version points at."""
    report = _registry().gc(grace_seconds=grace, dry_run=dry_run)
    if as_json:
        print_json({"removed": report.removed, "freed_bytes": report.freed_bytes, "kept_young": report.young, "dry_run": dry_run})
        return
    click.echo(f"{'would remove' if dry_run else 'removed'} {len(report.removed)} blobs, {report.freed_bytes:,} bytes")
    if report.young:
        click.echo(f"kept {report.young} unreferenced blob{'s' if report.young != 1 else ''} younger than the grace period "
                   f"({grace:g} s), which an add in progress may still need; `adapterhub gc --grace 0` removes them now")  # fmt: skip


@click.command()
@click.option("--quick", is_flag=True, help="Check sizes only, not sha256.")
@json_option
def fsck(quick: bool, as_json: bool) -> None:
    """Check every recorded file is present with the right sha256; exit 1 when something is missing or corrupt."""
    report = _registry().fsck(verify_hashes=not quick)
    if as_json:
        print_json({"clean": report.clean, "checked": report.checked, "missing": report.missing,
                    "corrupt": report.corrupt, "orphans": report.orphans})  # fmt: skip
    else:
        click.echo(f"checked {report.checked} files: {len(report.missing)} missing, {len(report.corrupt)} corrupt, "
                   f"{len(report.orphans)} orphan blobs (remove with `adapterhub gc`)")  # fmt: skip
        for line in report.missing:
            click.echo(f"  missing  {line}")
        for line in report.corrupt:
            click.echo(f"  corrupt  {line}")
    if not report.clean:
        raise SystemExit(1)


@click.command()
@json_option
def bases(as_json: bool) -> None:
    """List registered base models with their fingerprints."""
    infos = _registry().list_bases()
    if as_json:
        print_json(infos)
    else:
        print_table(
            ["name", "content", "arch", "params", "dtype", "type", "derived from", "measured scores"],
            [[b.name, b.content_hash[:12], b.arch_hash[:12], f"{b.parameter_count:,}", b.dtype, b.model_type or "",
              b.lineage.method if b.lineage else "", " ".join(f"{s.key}={s.value:.4g}" for s in b.scores)] for b in infos],
        )  # fmt: skip
