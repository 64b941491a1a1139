"""The domain types: what the registry records and returns. Pydantic models, serialisable to JSON Schema (schemas/)."""

from __future__ import annotations

import re
from datetime import datetime
from enum import Enum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from .errors import InvalidReference

_SEGMENT = r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}"
MAX_VERSION = 2**31 - 1  # versions are INTEGER columns (32-bit on PostgreSQL)
# Always used with fullmatch (never `^...$` with match, where `$` also matches before a final newline).
_REF = re.compile(rf"(?P<ns>{_SEGMENT})/(?P<name>{_SEGMENT})(?:@(?P<sel>[A-Za-z0-9][A-Za-z0-9._-]{{0,63}}))?")
ALIAS_PATTERN = re.compile(r"[A-Za-z][A-Za-z0-9._-]{0,63}")
LATEST = "latest"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False)


class AdapterMethod(str, Enum):
    LORA = "lora"
    DORA = "dora"


class AdapterRef(_Model):
    """`namespace/name`, optionally pinned to a version number or an alias (`@3`, `@prod`)."""

    namespace: str
    name: str
    version: int | None = None
    alias: str | None = None

    @classmethod
    def parse(cls, text: str) -> AdapterRef:
        m = _REF.fullmatch(text) if isinstance(text, str) else None  # no strip: `ns/x\n` is not `ns/x`
        if not m or ".." in text:
            raise InvalidReference(text, "expected namespace/name[@version|@alias]")
        sel = m.group("sel")
        if sel is None:
            return cls(namespace=m.group("ns"), name=m.group("name"))
        if sel.isdigit():
            if int(sel) > MAX_VERSION:  # beyond the database's INTEGER: an overflow (500) in SQL, never a version
                raise InvalidReference(text, f"a version is at most {MAX_VERSION}")
            return cls(namespace=m.group("ns"), name=m.group("name"), version=int(sel))
        if not ALIAS_PATTERN.fullmatch(sel):
            raise InvalidReference(text, "an alias starts with a letter")
        return cls(namespace=m.group("ns"), name=m.group("name"), alias=sel)

    @property
    def full_name(self) -> str:
        return f"{self.namespace}/{self.name}"

    def __str__(self) -> str:
        if self.version is not None:
            return f"{self.full_name}@{self.version}"
        if self.alias is not None:
            return f"{self.full_name}@{self.alias}"
        return self.full_name


class ScoreSource(str, Enum):
    """Where a score comes from: `measured` by `adapterhub eval` on this registry's machine, or `reported` (typed in
    with `add --metric`, or read from a pushed/pulled card) and taken on trust."""

    MEASURED = "measured"
    REPORTED = "reported"


class ScoreProvenance(_Model):
    """How a measured score was obtained, so a reader can reproduce it or tell two scores apart."""

    dataset_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    dataset_size: int = Field(ge=0)  # examples scored
    metric: str
    decoding: dict[str, Any] = Field(default_factory=dict)  # e.g. {"strategy": "greedy", "max_new_tokens": 32, "batch_size": 8}
    base_fingerprint: str  # content hash of the base the score was measured on
    adapterhub_version: str
    date: datetime


class EvalScore(_Model):
    dataset: str
    metric: str
    value: float
    split: str = "test"
    higher_is_better: bool = True
    source: ScoreSource = ScoreSource.REPORTED
    provenance: ScoreProvenance | None = None

    @property
    def key(self) -> str:
        return f"{self.dataset}/{self.metric}"


class FileEntry(_Model):
    """A file of an adapter as stored: its path inside the adapter folder, sha256 and size in bytes."""

    path: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(ge=0)


class Fingerprint(_Model):
    """A base model's identity computed from its weights, not its name."""

    arch_hash: str  # sha256 over sorted (name, shape, dtype) from the safetensors headers
    content_hash: str  # sha256 over tensor bytes in sorted name order, independent of sharding
    parameter_count: int
    dtype: str  # the most common dtype, by parameter count
    tensor_count: int


class ParentLink(_Model):
    """One parent of an adapter or merged model, with the weight it was combined with."""

    ref: str  # namespace/name@version
    weight: float = 1.0


class Lineage(_Model):
    """How something was derived: the method, its parameters, and the parents with their weights."""

    method: str  # e.g. "merge", "compose:cat", "compose:ties", "extract", "tune" (params: a TuneProvenance)
    parents: list[ParentLink] = Field(default_factory=list)
    base: str | None = None  # content hash of the base it was derived on
    params: dict[str, Any] = Field(default_factory=dict)


class DataFileInfo(_Model):
    """One data file a tuning run read: what it was for, which bytes, how many examples, in which format."""

    role: str  # "train" or "eval"
    name: str  # the file name (not the full path: paths leak the trainer's machine layout)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    examples: int = Field(ge=0)
    format: str  # "vertex", "chat" or "prompt_completion"


class TuneProvenance(_Model):
    """Everything `adapterhub tune` knows about how an adapter was trained; stored as `Lineage(method="tune").params`."""

    base_name: str
    base_fingerprint: str  # content hash
    base_arch_hash: str
    data: list[DataFileInfo]
    hyperparameters: dict[str, Any]
    seed: int
    steps: int
    trainable_params: int
    total_params: int
    wall_time_s: float
    cpu_time_s: float | None = None  # CPU seconds of the training process (all threads): comparable on a busy machine
    peak_rss_bytes: int
    train_peak_rss_bytes: int | None = None  # peak while training only (model loaded), where the OS can tell (Linux)
    loss_curve: list[tuple[int, float]] = Field(default_factory=list)  # (step, training loss)
    eval_loss: float | None = None
    library_versions: dict[str, str] = Field(default_factory=dict)
    resumed_from_step: int | None = None


class BaseModelInfo(_Model):
    id: int
    name: str
    arch_hash: str
    content_hash: str
    parameter_count: int
    dtype: str
    model_type: str | None = None
    lineage: Lineage | None = None
    scores: list[EvalScore] = Field(default_factory=list)  # the base's own measured scores (`eval --base-only`)
    created_at: datetime


class BaseModelRefInfo(_Model):
    """The base an adapter was registered against, as shown on the adapter's card.

    The hashes are the identity; the name is a label. `verified` says whether this registry fingerprinted the base's
    weights itself (`add --base`, `register_base`); otherwise the hashes and name are only what a push or pull
    declared, and `name_declared_by` says who declared them. Both are computed by the registry showing the card:
    whatever a pushed card says about them is ignored."""

    name: str
    arch_hash: str
    content_hash: str
    verified: bool = False
    name_declared_by: str | None = None


class AdapterCard(_Model):
    """Everything the registry knows about one version of one adapter."""

    namespace: str
    name: str
    version: int = Field(ge=1)
    aliases: list[str] = Field(default_factory=list)
    task: str
    method: AdapterMethod = AdapterMethod.LORA
    rank: int  # the config's default rank `r`
    rank_pattern: dict[str, int] = Field(default_factory=dict)  # per-module ranks that differ from `rank`
    alpha: float
    use_rslora: bool = False
    target_modules: list[str] = Field(default_factory=list)
    description: str = ""
    license: str | None = None
    tags: list[str] = Field(default_factory=list)
    base_model: BaseModelRefInfo | None = None
    base_model_name_or_path: str | None = None  # what the adapter's config says, unverified
    peft_task_type: str | None = None
    scores: list[EvalScore] = Field(default_factory=list)
    files: list[FileEntry] = Field(default_factory=list)
    lineage: Lineage | None = None
    created_at: datetime

    @property
    def full_name(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def ref(self) -> str:
        return f"{self.full_name}@{self.version}"

    @property
    def total_size(self) -> int:
        return sum(f.size for f in self.files)

    def summary_lines(self) -> list[str]:
        """A human-readable card, one field a line (what `adapterhub show` prints)."""
        b = self.base_model
        base = (
            f"{b.name} (content {b.content_hash[:12]}, arch {b.arch_hash[:12]}"
            + ("" if b.verified else f"; unverified, name declared by {b.name_declared_by or 'a push'}")
            + ")"
            if b
            else f"not fingerprinted (config says {self.base_model_name_or_path or '-'})"
        )
        pairs: list[tuple[str, object]] = [
            ("task", self.task), ("method", self.method.value), ("rank", self.rank), ("alpha", self.alpha),
            ("rsLoRA", self.use_rslora), ("targets", ", ".join(self.target_modules)),
            ("rank pattern", ", ".join(f"{k}={v}" for k, v in self.rank_pattern.items()) or "-"), ("base", base),
            ("description", self.description or "-"), ("license", self.license or "-"), ("tags", ", ".join(self.tags) or "-"),
            ("created", self.created_at.isoformat(timespec="seconds")),
        ]  # fmt: skip
        tuned = self.tune_provenance
        if tuned is not None:
            data = ", ".join(f"{d.name} ({d.examples} examples, sha256:{d.sha256[:12]})" for d in tuned.data if d.role == "train")
            pairs.append(("lineage", f"tuned from base {tuned.base_name} ({tuned.base_fingerprint[:12]}) on {data}"))
            trained = (
                f"{tuned.steps} steps, seed {tuned.seed}, {tuned.trainable_params:,} of {tuned.total_params:,} params trainable"
            )
            pairs.append(("training", f"{trained}, {tuned.wall_time_s:.1f} s"))
        elif self.lineage:
            parents = ", ".join(f"{p.ref}×{p.weight:g}" for p in self.lineage.parents)
            pairs.append(("lineage", f"{self.lineage.method}({parents})"))
        lines = [f"{k:<13}{v}" for k, v in pairs]
        lines.append("scores" + ("" if self.scores else "       none recorded"))
        for s in self.scores:
            lines.append(
                f"  {s.dataset}/{s.metric} [{s.split}] = {s.value:.4g}{'' if s.higher_is_better else ' (lower is better)'}"
                f"  ({s.source.value})"
            )
        lines.append("files")
        for f in self.files:
            lines.append(f"  {f.path:<28}{f.size:>12,} B  sha256:{f.sha256[:16]}")
        return lines

    @property
    def tune_provenance(self) -> TuneProvenance | None:
        """How this adapter was trained, when `adapterhub tune` made it."""
        if self.lineage is None or self.lineage.method != "tune":
            return None
        return TuneProvenance.model_validate(self.lineage.params)

    def score(self, key: str) -> float | None:
        """The value of `DATASET/METRIC`, or None when not recorded."""
        for s in self.scores:
            if s.key == key:
                return s.value
        return None


_Short = Annotated[str, StringConstraints(max_length=256)]
MAX_SEARCH_LIMIT = 1000  # matches returned by one search
MAX_SEARCH_OFFSET = 10_000  # matches one search may skip (deeper pages need a narrower query)


class SearchQuery(_Model):
    """Filters for `search`: all given filters must hold."""

    # Bounded so that one query (a remote search is anonymous) cannot keep the database busy: real ones are tiny.
    text: str | None = Field(None, max_length=1000)
    task: str | None = Field(None, max_length=256)
    # an arch or content hash (prefix allowed), or the name of a base whose weights this registry fingerprinted
    # (names that only pushes or pulls declared never match: they are labels, not identity)
    base: str | None = Field(None, max_length=256)
    rank_min: int | None = Field(None, ge=0, le=2**31 - 1)  # bounded: a rank is a 32-bit integer column
    rank_max: int | None = Field(None, ge=0, le=2**31 - 1)
    min_scores: dict[_Short, float] = Field(default_factory=dict, max_length=32)  # "dataset/metric" -> threshold
    tags: list[_Short] = Field(default_factory=list, max_length=32)
    method: AdapterMethod | None = None
    sort: str | None = Field(
        None, max_length=256
    )  # "dataset/metric": best first (respects higher_is_better); default newest first
    limit: int = Field(20, ge=1, le=MAX_SEARCH_LIMIT)
    # matches skipped before the first returned (paging: page N is one SQL page); bounded, since a database still
    # walks the skipped rows
    offset: int = Field(0, ge=0, le=MAX_SEARCH_OFFSET)
    all_versions: bool = False  # False: only the newest version of each name
    measured: bool = False  # only adapters with a measured score; score filters and sorting then use measured scores only


class SearchResult(_Model):
    query: SearchQuery
    total: int  # matches before `limit`
    items: list[AdapterCard]
    total_exact: bool = True  # False when the search counted only up to a limit and more matched: "total+"


class TokenScope(str, Enum):
    READ = "read"  # read private adapters of the namespace
    WRITE = "write"  # read, and push new versions to the namespace


class TokenInfo(_Model):
    """What a hub token allows (never the secret itself)."""

    id: int
    prefix: str
    label: str = ""
    namespace: str  # "*" for every namespace
    scope: TokenScope
    created_at: datetime
    expires_at: datetime | None = None
    revoked_at: datetime | None = None

    def allows(self, namespace: str, scope: TokenScope, *, now: datetime) -> bool:
        if self.revoked_at is not None or (self.expires_at is not None and self.expires_at <= now):
            return False
        if self.namespace not in ("*", namespace):
            return False
        return scope is TokenScope.READ or self.scope is TokenScope.WRITE
