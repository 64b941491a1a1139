"""Persistence: the metadata database (SQLite or PostgreSQL) and its migrations, ORM rows, content-addressed blobs,
and the Registry.

Public surface: `registry.Registry` (also re-exported by `adapterhub`) with `GcReport` / `FsckReport`;
`tokens.TokenStore` and `tokens.parse_duration` (hub access tokens); `blobs.BlobStore`; `db.Database`,
`db.head_revision`; `visibility.Visibility` (who may see private hub repositories). For the hub's own store
(`adapterhub.hub.repos`, one layer up) also the hub's rows in `orm` and `records.record_version` with
`records.VersionFields`: the one way any caller records an adapter version. Everything else is internal and may
change without notice: `convert` (rows to cards), `bases` (what a base's name means), `search` (the SQL behind
`Registry.search`), `records.lock_repo` / `set_alias`.
"""
