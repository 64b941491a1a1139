"""Sharing adapters: push/pull clients, model cards, and the self-hosted hub server with its store.

Public surface: `client.push`, `client.pull`, `client.remote_search`, `client.endpoint_url` and `client.PushResult`
(`push`, `pull` and `remote_search` are re-exported by `adapterhub`); `server` (see its docstring). Internal to the hub and may change without notice:
`repos` (the hub's store: repositories, commits and refs over the registry's database and blobs), `adapters`
(which files of a repository form an adapter; checked before a commit's write lock, recorded through
`store.records.record_version`), `modelcard` (README front matter), `oids` (git object ids) and `types` (the hub's
domain models).
"""
