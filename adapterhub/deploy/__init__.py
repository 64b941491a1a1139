"""`adapterhub deploy`: one frozen base served over the OpenAI API, each request picking its adapter by `model`.

- `schemas`: the OpenAI request and response bodies, with the bounds every request is held to;
- `models`: which adapter a `model` string names (local registry, else `--remote`), checked against the base;
- `engine`: the continuous-batching worker that runs every active row, each with its own adapter, in one forward;
- `batching`: the KV-cache and sampling helpers the engine's rows share;
- `metrics`: the Prometheus counters; `app`: the FastAPI routes; `background`: a server in a child process.
"""
