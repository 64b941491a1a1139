"""LoRA mathematics and runtime: deltas and scaling, attach and routing, compose, merge, extract.

Public surface (also re-exported by `adapterhub`): `attach.attach`, `detach`, `set_active`, `activation`,
`list_adapters`, `active_adapters`, `fuse`, `unfuse`, `is_fused`; `routing.route`; `cache.AdapterCache`;
`trainable.add_trainable` and `trainable.save_attached`; `merge.merge`, `compose.compose`, `extract.extract` and
their result models. Everything else is internal to this package and may change without notice: `state` (the
shared runtime data), `layers` (the wrapper modules), `delta` (the LoRA/DoRA arithmetic), `stream` (streamed
safetensors I/O), `compose_methods`, and `attach.attach_loaded` (trusted callers inside the package only).
"""
