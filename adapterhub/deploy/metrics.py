"""`GET /metrics`: Prometheus text for requests, tokens, batch sizes, resident adapters and cache hits.

One `CollectorRegistry` per server (not the process-global one), so several servers in one process never clash.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("adapterhub_deploy_requests", "HTTP requests answered", ["endpoint", "status"], registry=r)
        self.token_count = Counter("adapterhub_deploy_tokens", "Tokens processed", ["kind"], registry=r)
        self.batch_size = Histogram("adapterhub_deploy_batch_size", "Rows in each forward", registry=r,
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128))  # fmt: skip
        self.resident = Gauge("adapterhub_deploy_resident_adapters", "Adapters attached to the base", registry=r)
        self.resident_bytes = Gauge("adapterhub_deploy_resident_adapter_bytes", "Bytes the resident adapters hold", registry=r)
        self.hits = Gauge("adapterhub_deploy_adapter_cache_hits", "Adapter cache hits since start", registry=r)
        self.misses = Gauge("adapterhub_deploy_adapter_cache_misses", "Adapter loads since start", registry=r)
        self.evictions = Gauge("adapterhub_deploy_adapter_cache_evictions", "Adapters evicted since start", registry=r)

    def request(self, endpoint: str, status: int) -> None:
        self.requests.labels(endpoint, str(status)).inc()

    def tokens(self, kind: str, n: int) -> None:
        self.token_count.labels(kind).inc(n)

    def batch(self, rows: int) -> None:
        self.batch_size.observe(rows)

    def cache(self, cache: Any) -> None:
        """Copy the adapter cache's counters (called by the engine thread after each adapter lookup)."""
        self.resident.set(len(cache.resident))
        self.resident_bytes.set(cache.used_bytes)
        self.hits.set(cache.hits)
        self.misses.set(cache.misses)
        self.evictions.set(cache.evictions)

    def render(self) -> bytes:
        return bytes(generate_latest(self.registry))
