"""Recording one adapter version inside a caller's transaction: `record_version` is the one way a version is
written, by `Registry.add`, the hub's commits and `pull` alike, so every path issues version numbers, latest flags,
search text, aliases and bases the same way."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.orm import Session

from ..card import AdapterCard, BaseModelRefInfo, EvalScore, FileEntry, Lineage, ScoreSource
from ..peft_format import AdapterLayout
from . import convert
from .bases import declared_base
from .orm import AdapterRow, AliasRow, BaseModelRow, EvalScoreRow, FileRow, RepoRow, TagRow


@dataclass
class VersionFields:
    """What a person says about an adapter version (the layout says the rest), and the files it is made of. An
    incoming adapter (a hub commit, a pull) also says which base it was trained on, by hash (`base_model`)."""

    task: str
    description: str = ""
    license: str | None = None
    tags: Iterable[str] = ()
    scores: Sequence[EvalScore] = ()
    lineage: Lineage | None = None
    files: Sequence[FileEntry] = field(default_factory=list)
    base_model: BaseModelRefInfo | None = None


def lock_repo(s: Session, namespace: str, name: str) -> RepoRow:
    """Get or create the repo row and lock it for this transaction, so version numbers are issued one at a time."""
    from sqlalchemy.dialects import postgresql, sqlite

    insert = postgresql.insert if s.get_bind().dialect.name == "postgresql" else sqlite.insert
    s.execute(insert(RepoRow).values(namespace=namespace, name=name, last_version=0, private=False).on_conflict_do_nothing())
    q = sa.select(RepoRow).where(RepoRow.namespace == namespace, RepoRow.name == name).execution_options(populate_existing=True)
    if s.get_bind().dialect.name == "postgresql":
        q = q.with_for_update()
    return s.scalars(q).one()


def record_version(
    s: Session,
    namespace: str,
    name: str,
    layout: AdapterLayout,
    fields: VersionFields,
    *,
    base: BaseModelRow | None = None,
    declared_by: str = "a push or pull",
    aliases: Iterable[str] = (),
) -> AdapterCard:
    """Insert the next version of `namespace/name` with its files, scores, tags and `aliases`; it becomes `latest`.

    The base is `base` (a row whose weights this registry fingerprinted), else the one `fields.base_model` declares,
    recorded as declared by `declared_by` (e.g. "push to evil/x") and never as verified. Rows only: the caller
    checked the layout and stored the blobs before opening the transaction."""
    if base is None and fields.base_model is not None:
        base = declared_base(s, fields.base_model, declared_by)
    cfg = layout.config
    tags = sorted(set(fields.tags))
    repo = lock_repo(s, namespace, name)
    repo.last_version += 1
    s.execute(sa.update(AdapterRow).where(AdapterRow.repo_id == repo.id).values(is_latest=False))
    row = AdapterRow(
        repo=repo, version=repo.last_version, is_latest=True, task=fields.task.strip(), method=layout.method,
        rank=cfg.r, rank_pattern={m: r for m, r in layout.rank_by_module.items() if r != cfg.r},
        alpha=float(cfg.lora_alpha), use_rslora=cfg.use_rslora, target_modules=layout.target_module_names,
        description=fields.description, license=fields.license, base_model=base,
        search_text=" ".join([f"{namespace}/{name}", fields.task, fields.description, *tags]).lower(),
        base_model_name_or_path=cfg.base_model_name_or_path, peft_task_type=cfg.task_type,
        lineage=fields.lineage.model_dump(mode="json") if fields.lineage else None,
    )  # fmt: skip
    row.files = [FileRow(path=e.path, sha256=e.sha256, size=e.size) for e in sorted(fields.files, key=lambda e: e.path)]
    row.scores = [score_row(x, ScoreSource.REPORTED) for x in fields.scores]
    row.tags = [TagRow(tag=t) for t in tags]
    s.add(row)
    s.flush()
    for alias in aliases:
        set_alias(s, row.repo, alias, row)
    return convert.card(s, row)


def set_alias(s: Session, repo: RepoRow, alias: str, row: AdapterRow) -> None:
    """Point `alias` of `repo` at `row` (it moves if it pointed elsewhere); the alias was checked by the caller."""
    existing = s.scalar(sa.select(AliasRow).where(AliasRow.repo_id == repo.id, AliasRow.alias == alias))
    if existing is None:
        s.add(AliasRow(repo_id=repo.id, alias=alias, adapter_id=row.id))
    else:
        existing.adapter_id = row.id


def score_row(x: EvalScore, source: ScoreSource) -> EvalScoreRow:
    """The row for one score. Scores that arrive with a version (typed in, or read from a pushed or pulled card)
    are always `reported`, whatever they claim; only `Registry.record_scores` (what `adapterhub eval` calls) may
    store `measured` ones, with their provenance."""
    prov = x.provenance.model_dump(mode="json") if x.provenance and source is ScoreSource.MEASURED else None
    return EvalScoreRow(dataset=x.dataset, metric=x.metric, split=x.split, value=x.value, higher_is_better=x.higher_is_better,
                        source=source.value, provenance=prov)  # fmt: skip
