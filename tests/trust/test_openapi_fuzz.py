"""Every route of the server's OpenAPI schema, fuzzed by schemathesis against a live `adapterhub serve` on 127.0.0.1,
on SQLite and PostgreSQL: no request may be answered with a 5xx (schemathesis' `not_a_server_error` check).

Each operation gets a bounded number of schema-conforming (positive) and schema-violating (negative) examples, sent
with a write token for every namespace so the write routes run past authentication; half of them aim at a repository
that exists (`team/fuzz` on `main`) so commits, paths-info and downloads reach their parsers instead of a 404.
Examples are derandomized: a run is reproducible, and a failure names the request that caused it."""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from adapterhub.hub.client import push
from adapterhub.hub.server.background import BackgroundHub
from adapterhub.store.registry import Registry
from adapterhub.store.tokens import TokenStore

from .conftest import BACKENDS, fresh_database, hub_registry, serve

# per operation and generation mode: ~20 operations x 2 modes x 12, about a minute per database on 2 cores;
# ADAPTERHUB_FUZZ_EXAMPLES raises it for a longer hunt
EXAMPLES = int(os.environ.get("ADAPTERHUB_FUZZ_EXAMPLES", "12"))
REPO = {"namespace": "team", "name": "fuzz"}


@schemathesis.serializer("application/x-ndjson")
def _ndjson(ctx: object, value: object) -> bytes:
    """A commit body: one JSON value per line (a non-list body is sent as one line)."""
    lines = value if isinstance(value, list) else [value]
    return "\n".join(json.dumps(line) for line in lines).encode()


@dataclass
class FuzzHub:
    hub: BackgroundHub
    token: str


@pytest.fixture(scope="module", params=BACKENDS)
def fuzz_hub(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, minilm_adapter_dir: Path) -> Iterator[FuzzHub]:
    with fresh_database(request.param) as db_url:
        home = tmp_path_factory.mktemp(f"fuzz-{request.param}") / "home"
        home.mkdir(parents=True)
        reg = hub_registry(home, db_url)
        token = TokenStore(reg.db).create("*", "write", label="fuzzer")[1]
        reg.db.dispose()
        with serve(home, db_url) as hub:
            src = Registry(home=tmp_path_factory.mktemp("fuzz-src"))
            src.add(minilm_adapter_dir, "team/fuzz", "sentiment")
            push("team/fuzz", remote=hub.url, registry=src, token=token)
            src.db.dispose()
            yield FuzzHub(hub, token)


def test_no_route_answers_a_server_error(fuzz_hub: FuzzHub) -> None:
    schema = schemathesis.openapi.from_url(f"{fuzz_hub.hub.url}/api/adapterhub/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 18, [op.label for op in operations]
    headers = {"Authorization": f"Bearer {fuzz_hub.token}"}
    failures: list[str] = []
    sent = 0
    unsatisfiable: list[str] = []
    statuses: dict[str, Counter[int]] = {}  # printed with -s: which answers each route gave

    for op in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True, phases=[Phase.explicit, Phase.generate],
                      suppress_health_check=list(HealthCheck))  # fmt: skip
            @given(case=op.as_strategy(generation_mode=mode), existing=st.booleans())
            def run(case: schemathesis.Case, existing: bool) -> None:
                nonlocal sent
                if existing and case.path_parameters and {"namespace", "name"} <= set(case.path_parameters):
                    case.path_parameters.update(REPO)
                    if "revision" in case.path_parameters:
                        case.path_parameters["revision"] = "main"
                try:
                    response = case.call(base_url=fuzz_hub.hub.url, headers=headers, timeout=60)
                except schemathesis.errors.SerializationNotPossible:
                    return
                sent += 1
                statuses.setdefault(op.label, Counter())[response.status_code] += 1
                try:
                    case.validate_response(response, checks=[not_a_server_error], headers=headers)
                except (AssertionError, BaseExceptionGroup):  # every failed check is collected, then reported together
                    body = response.text[:300].replace("\n", " ")
                    failures.append(f"{case.method} {response.request.url} body={str(case.body)[:200]!r} -> {response.status_code} {body}")

            try:
                run()
            except Unsatisfiable:  # nothing in this operation can violate the schema (e.g. no parameters, no body)
                assert mode is GenerationMode.NEGATIVE, op.label
                unsatisfiable.append(op.label)

    assert set(statuses) == {op.label for op in operations}  # the fuzzer really sent requests to every route
    log = fuzz_hub.hub.log.read_text(errors="replace")
    print(f"{sent} requests; no negative examples for {unsatisfiable}")
    for label, counts in statuses.items():
        print(f"  {label}: {dict(sorted(counts.items()))}")
    assert not failures, "\n".join(failures[:20]) + "\n--- server log tail ---\n" + log[-3000:]
