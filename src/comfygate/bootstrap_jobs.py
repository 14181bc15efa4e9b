"""Composition of the jobs side: store, storage, engines, dispatcher and use cases.

Called by ``bootstrap.build``; kept apart so the composition root stays readable.
Building is cheap and touches no file: engines load their models, the dispatcher
recovers jobs and the share secret is read only when the server starts or a link is
made.

Engine choice (one, from settings): ComfyUI pools when ``COMFYGATE_COMFYUI_URLS`` (or
``comfyui_pools``) is set, else ``ddcolor-onnx`` when ``onnx_model_path`` is set, else
the model-free ``preview`` engine.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from sqlalchemy.engine import Engine as DbEngine

from comfygate.adapters.comfyui import comfyui_engine_from_settings
from comfygate.adapters.db.sql_jobs import SqlJobStore
from comfygate.adapters.engines.ddcolor_onnx import DdcolorOnnxEngine
from comfygate.adapters.engines.preview import PreviewEngine
from comfygate.adapters.images import inspect_image
from comfygate.adapters.images.upload import sweep_stale
from comfygate.adapters.job_metrics import PrometheusJobMetrics
from comfygate.adapters.metrics import GatewayMetrics
from comfygate.adapters.storage.local import (
    HmacShareLinks,
    LocalResultStorage,
    load_or_create_secret,
)
from comfygate.config import Settings
from comfygate.domain.jobs import hold_ttl_s
from comfygate.services.audit import AuditLog
from comfygate.services.clock import Clock
from comfygate.services.dispatcher import Dispatcher, DispatchPolicy, Offload
from comfygate.services.engines import Engine
from comfygate.services.events import JobEvents
from comfygate.services.job_queries import JobQueries
from comfygate.services.jobs import JobPolicy, JobSubmission
from comfygate.services.ledger import LedgerService
from comfygate.services.plans import PlanService
from comfygate.services.quoting import QuoteService
from comfygate.services.recovery import settle_unsettled
from comfygate.services.settlement import JobLifecycle, ResultRetention


@dataclass
class JobServices:
    """What the entrypoints use for jobs."""

    store: SqlJobStore
    events: JobEvents
    lifecycle: JobLifecycle
    dispatcher: Dispatcher
    submission: JobSubmission
    queries: JobQueries
    storage: LocalResultStorage
    upload_dir: Path
    """Where uploads are received (same file system as the job folders)."""
    engines: list[Engine]


def build_engines(settings: Settings, metrics: PrometheusJobMetrics) -> list[Engine]:
    """The one engine the settings choose (see the module docstring)."""
    comfyui = comfyui_engine_from_settings(
        settings, on_cold_start=lambda _instance, _capability, _s: metrics.cold_start("comfyui")
    )
    if comfyui is not None:
        return [comfyui]
    if settings.onnx_model_path is not None:
        return [DdcolorOnnxEngine(model_path=settings.onnx_model_path)]
    return [PreviewEngine()]


def job_timeout_s(settings: Settings) -> float:
    """How long one attempt may run: ComfyUI has its own, longer, setting."""
    if settings.comfyui_url_list() or settings.comfyui_pools:
        return max(settings.job_timeout_s, settings.comfyui_timeout_s)
    return settings.job_timeout_s


def build_job_services(
    settings: Settings,
    *,
    engine: DbEngine,
    clock: Clock,
    ledger: LedgerService,
    plans: PlanService,
    quotes: QuoteService,
    audit: AuditLog,
    metrics: GatewayMetrics,
    engines: list[Engine] | None = None,
    offload: Offload | None = None,
    chores: Sequence[Callable[[], object]] = (),
) -> JobServices:
    """Wire the jobs side; ``engines`` overrides the settings' choice (tests);
    ``offload`` runs the dispatcher's blocking calls (default: ``asyncio.to_thread``);
    ``chores`` join the dispatcher's housekeeping (the gateway's own, such as orders)."""
    store = SqlJobStore(engine)
    storage = LocalResultStorage(settings.data_dir / "jobs")
    job_metrics = PrometheusJobMetrics(metrics)
    events = JobEvents(store=store, clock=clock)
    timeout_s = job_timeout_s(settings)
    lifecycle = JobLifecycle(
        store=store,
        ledger=ledger,
        events=events,
        storage=storage,
        clock=clock,
        metrics=job_metrics,
        result_retention_s=settings.result_retention_s,
        audit=audit,
        runner=settings.runner_id(),
        lease_s=settings.job_lease_s,
    )
    engines = engines if engines is not None else build_engines(settings, job_metrics)
    retention = ResultRetention(store=store, storage=storage, clock=clock)
    dispatcher = Dispatcher(
        store=store,
        lifecycle=lifecycle,
        events=events,
        engines=engines,
        storage=storage,
        clock=clock,
        metrics=job_metrics,
        policy=DispatchPolicy(
            job_timeout_s=timeout_s,
            default_concurrency=settings.job_concurrency,
            concurrency=dict(settings.job_concurrency_per_capability),
        ),
        housekeeping=[
            partial(settle_unsettled, store=store, lifecycle=lifecycle),
            retention.purge,
            ledger.expire,
            quotes.purge_expired,
            partial(sweep_stale, settings.data_dir / "tmp"),
            *chores,
        ],
        offload=offload or asyncio.to_thread,
    )
    policy = JobPolicy(
        max_pixels=settings.max_image_pixels,
        min_side_px=settings.min_image_side_px,
        job_timeout_s=timeout_s,
        dedup_window_s=settings.dedup_window_s,
        # A hold outlives both attempts plus an hour-long (hold_ttl_s) wait in queue.
        hold_ttl_s=hold_ttl_s(job_timeout_s=timeout_s, queue_allowance_s=settings.hold_ttl_s),
    )
    submission = JobSubmission(
        store=store,
        ledger=ledger,
        quotes=quotes,
        plans=plans,
        events=events,
        storage=storage,
        inspect=inspect_image,
        clock=clock,
        policy=policy,
        metrics=job_metrics,
        enqueue=dispatcher.enqueue,
        served_capabilities=dispatcher.served_capabilities,
        audit=audit,
    )
    secret = settings.share_secret
    links = HmacShareLinks(
        secret.encode() if secret else lambda: load_or_create_secret(settings.data_dir)
    )
    queries = JobQueries(
        store=store, storage=storage, links=links, clock=clock, max_share_s=settings.share_max_s
    )
    return JobServices(
        store=store,
        events=events,
        lifecycle=lifecycle,
        dispatcher=dispatcher,
        submission=submission,
        queries=queries,
        storage=storage,
        upload_dir=settings.data_dir / "tmp",
        engines=engines,
    )
