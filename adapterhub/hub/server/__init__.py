"""The self-hosted hub: the Hugging Face Hub HTTP API subset plus the registry's own JSON API.

Public surface: `app.create_app`, `app.serve` and `app.ConnectionLimits` (what `adapterhub serve` runs),
`app.app_from_env` (a uvicorn factory), and `background.start_hub` / `BackgroundHub` (a hub in a child process,
for tests, benchmarks and the demo). Internal: `context` (the request context, body readers and the error table
every route shares), the route modules `resolve`, `commits`, `api` and `registry_api`, `access` (tokens and
visibility), `ndjson` (commit payloads), `openapi` and `protocol` (uvicorn's guarded HTTP protocol). Routes import
from `context`, never from `app`, which only assembles them.
"""
