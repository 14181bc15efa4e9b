"""The jobs side's metrics (``JobMetrics``) recorded on the process's Prometheus holder."""

from __future__ import annotations

from comfygate.adapters.metrics import GatewayMetrics


class PrometheusJobMetrics:
    """``JobMetrics`` on ``GatewayMetrics``: jobs by state, queue depth, tokens, inference."""

    def __init__(self, metrics: GatewayMetrics) -> None:
        self._m = metrics

    def job_state(self, capability: str, state: str) -> None:
        self._m.jobs.labels(capability=capability, state=state).inc()

    def queue_depth(self, capability: str, depth: int) -> None:
        self._m.queue_depth.labels(capability=capability).set(depth)

    def tokens(self, capability: str, what: str, amount: int) -> None:
        counter = {
            "held": self._m.tokens_held,
            "captured": self._m.tokens_captured,
            "released": self._m.tokens_released,
        }[what]
        if amount > 0:
            counter.labels(capability=capability).inc(amount)

    def inference(self, capability: str, engine: str, seconds: float) -> None:
        self._m.inference_seconds.labels(capability=capability, engine=engine).observe(seconds)

    def cold_start(self, engine: str) -> None:
        self._m.cold_starts.labels(engine=engine).inc()
