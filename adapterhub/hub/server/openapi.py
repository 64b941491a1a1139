"""The request bodies of the routes that read raw bodies (JSON objects, NDJSON, form data), added to the OpenAPI schema.

FastAPI describes a body only when a route declares a pydantic parameter; the Hub API routes parse their bodies
themselves (streaming, size-capped), so without this the schema says they take nothing and a schema-driven fuzzer
never sends them a body. The shapes are what `huggingface_hub` sends.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

_STR: dict[str, Any] = {"type": "string"}
_PATH: dict[str, Any] = {"type": "string", "maxLength": 512}
_SEGMENT: dict[str, Any] = {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_-]{0,95}$"}  # a namespace or repo name


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def _line(key: str, value: dict[str, Any], required: list[str]) -> dict[str, Any]:
    """One NDJSON line of a commit: {"key": ..., "value": {...}}."""
    return {
        "type": "object", "required": ["key", "value"],
        "properties": {"key": {"type": "string", "enum": [key]}, "value": {"type": "object", "properties": value, "required": required}},
    }  # fmt: skip


_COMMIT_LINES: dict[str, Any] = {
    "type": "array",
    "items": {
        "oneOf": [
            _line("header", {"summary": _STR, "description": _STR, "parentCommit": _STR}, ["summary"]),
            _line(
                "file", {"path": _PATH, "content": _STR, "encoding": {"type": "string", "enum": ["base64"]}}, ["path", "content"]
            ),
            _line(
                "lfsFile",
                {"path": _PATH, "algo": {"type": "string", "enum": ["sha256"]}, "oid": _STR, "size": {"type": "integer"}},
                ["path", "oid"],
            ),
            _line("deletedFile", {"path": _PATH}, ["path"]),
            _line("deletedFolder", {"path": _PATH}, ["path"]),
        ]
    },
}

# (path, method) -> the OpenAPI requestBody object
RAW_BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("/api/repos/create", "post"): _json(
        {
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": _SEGMENT,
                "organization": {"anyOf": [_SEGMENT, {"type": "null"}]},
                "type": {"type": "string", "enum": ["model"]},
                "private": {"type": "boolean"},
                "visibility": {"type": "string", "enum": ["public", "private"]},
            },
        }
    ),  # fmt: skip
    ("/api/validate-yaml", "post"): _json(
        {"type": "object", "required": ["content"], "properties": {"content": _STR, "repoType": _STR}}
    ),
    ("/api/models/{namespace}/{name}/preupload/{revision}", "post"): _json(
        {
            "type": "object",
            "required": ["files"],
            "properties": {
                "files": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["path"],
                        "properties": {"path": _PATH, "size": {"type": "integer"}, "sample": _STR},
                    },
                }
            },
        }
    ),  # fmt: skip
    ("/api/models/{namespace}/{name}/commit/{revision}", "post"): {
        "required": True,
        "content": {"application/x-ndjson": {"schema": _COMMIT_LINES}},
        "description": "One JSON object per line: a header, then files (inline base64), LFS references and deletions.",
    },  # fmt: skip
    ("/api/models/{namespace}/{name}/tag/{revision}", "post"): _json(
        {"type": "object", "required": ["tag"], "properties": {"tag": {"type": "string", "maxLength": 80}, "message": _STR}}
    ),
    ("/api/models/{namespace}/{name}/branch/{branch}", "post"): _json(
        {"type": "object", "properties": {"startingPoint": {"type": "string", "maxLength": 80}}}
    ),
    ("/api/repos/delete", "delete"): _json(
        {"type": "object", "required": ["name"], "properties": {"name": _SEGMENT, "organization": _SEGMENT, "type": _STR}}
    ),
    ("/api/repos/move", "post"): _json(
        {"type": "object", "required": ["fromRepo", "toRepo"], "properties": {"fromRepo": _STR, "toRepo": _STR, "type": _STR}}
    ),
    ("/{namespace}/{name}.git/info/lfs/objects/batch", "post"): {
        "required": True,
        "content": {
            "application/vnd.git-lfs+json": {
                "schema": {
                    "type": "object",
                    "required": ["operation", "objects"],
                    "properties": {
                        "operation": {"type": "string", "enum": ["upload"]},
                        "transfers": {"type": "array", "items": {"type": "string", "enum": ["basic"]}},
                        "objects": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["oid", "size"],
                                "properties": {
                                    "oid": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                                    "size": {"type": "integer"},
                                },
                            },
                        },
                    },
                }
            }
        },
    },  # fmt: skip
    ("/api/models/{namespace}/{name}/uploads/{oid}", "put"): {
        "required": True,
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
        "description": "The file's raw bytes; {oid} is their sha256 and Content-Length their size.",
    },
    ("/api/models/{namespace}/{name}/uploads", "put"): {
        "required": True,
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
        "description": "A file's raw bytes; the answer names their sha256.",
    },
    ("/api/models/{namespace}/{name}/paths-info/{revision}", "post"): {
        "required": True,
        "content": {
            "application/x-www-form-urlencoded": {
                "schema": {
                    "type": "object",
                    "properties": {"paths": {"type": "array", "items": _PATH}, "expand": {"type": "boolean"}},
                }
            }
        },
    },  # fmt: skip
}


def describe_raw_bodies(app: FastAPI) -> None:
    """Make `app.openapi()` add RAW_BODIES to the routes that have no described body."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            for (path, method), body in RAW_BODIES.items():
                op = schema.get("paths", {}).get(path, {}).get(method)
                if op is not None and "requestBody" not in op:
                    op["requestBody"] = body
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way to extend the generated schema
