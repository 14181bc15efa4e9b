"""Prometheus metrics of one gateway process, on a registry of its own.

Each ``Container`` owns a ``GatewayMetrics`` with its own ``CollectorRegistry`` (never
the global default): tests build many apps in one process and each must count alone.
The API layer records requests; the jobs side records jobs, tokens, queue depth,
inference time and cold starts on the same object, and ``/metrics`` renders it.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
INFERENCE_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


class GatewayMetrics:
    """The metric families the issue lists; names are part of the operator interface."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "comfygate_http_requests",
            "HTTP requests by method, route template and status code.",
            ["method", "route", "status"],
            registry=r,
        )
        self.request_seconds = Histogram(
            "comfygate_http_request_duration_seconds",
            "HTTP request latency by method and route template.",
            ["method", "route"],
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.rate_limited = Counter(
            "comfygate_rate_limited_requests",
            "Requests refused by the per-key rate limit.",
            [],
            registry=r,
        )
        self.jobs = Counter(
            "comfygate_jobs",
            "Jobs entering each state (queued, running, succeeded, failed, canceled).",
            ["capability", "state"],
            registry=r,
        )
        self.queue_depth = Gauge(
            "comfygate_queue_depth",
            "Jobs waiting to run, per capability.",
            ["capability"],
            registry=r,
        )
        self.tokens_held = Counter(
            "comfygate_tokens_held",
            "Tokens placed on hold for jobs (a late charge's own hold included).",
            ["capability"],
            registry=r,
        )
        self.tokens_captured = Counter(
            "comfygate_tokens_captured",
            "Tokens captured by succeeded jobs.",
            ["capability"],
            registry=r,
        )
        self.tokens_released = Counter(
            "comfygate_tokens_released",
            "Tokens released back: by failed or canceled jobs, and by holds that ran out.",
            ["capability"],
            registry=r,
        )
        self.inference_seconds = Histogram(
            "comfygate_inference_seconds",
            "Engine inference time per job.",
            ["capability", "engine"],
            buckets=INFERENCE_BUCKETS_S,
            registry=r,
        )
        self.cold_starts = Counter(
            "comfygate_cold_starts",
            "Engine or worker cold starts (model loads).",
            ["engine"],
            registry=r,
        )

    def render(self) -> bytes:
        """The registry in the Prometheus text exposition format."""
        return generate_latest(self.registry)
