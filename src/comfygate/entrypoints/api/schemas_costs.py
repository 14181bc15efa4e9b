"""The cost-model report's JSON (``GET /v1/admin/pricing/fit``, ``comfygate pricing fit
--json``): per capability the fitted seconds of each price term, the fit's quality,
and the proposed price book."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from comfygate.domain import cost_model as cm
from comfygate.domain import cost_proposal as cp
from comfygate.domain.pricing_options import plain
from comfygate.services.cost_fit import FitReport


class TermOut(BaseModel):
    key: str = Field(
        description="base, megapixels, option:NAME, option:NAME:per_unit or option:NAME=CHOICE"
    )
    label: str
    seconds: float | None = Field(description="GPU seconds the term adds; null: not fitted")
    stderr_s: float | None = Field(description="standard error of `seconds`")
    current: str = Field(description="the amount the current book charges for it, in tokens")
    proposed: str = Field(description="the amount the proposed book charges for it")


class MemoryOut(BaseModel):
    base_mb: float
    mb_per_megapixel: float | None
    r2: float | None
    samples: int


class CapabilityFitOut(BaseModel):
    capability: str
    fitted: bool
    samples: int = Field(description="jobs fitted, outliers left out")
    outliers: int = Field(description="jobs left out as far off the first fit")
    unreadable: int = Field(description="jobs whose options the current book refuses")
    r2: float | None = Field(description="share of the time's variation the model explains")
    rmse_s: float | None
    mean_s: float | None
    terms: list[TermOut]
    memory: MemoryOut | None = Field(description="peak GPU MB against megapixels, if reported")
    current_tokens_per_s: float | None = Field(
        description="median list tokens per GPU second of the fitted jobs, current book"
    )
    proposed_tokens_per_s: float | None
    notes: list[str]


class ExampleOut(BaseModel):
    capability: str
    width: int
    height: int
    predicted_s: float | None
    current_tokens: int
    proposed_tokens: int


class CostFitOut(BaseModel):
    since: datetime
    until: datetime
    engines: list[str] | None = Field(description="null: every engine but preview")
    account_id: str | None = Field(
        description="the account whose jobs and book were fitted (null: every account's"
        " jobs, the default book); activate the proposal as its own book"
    )
    jobs: int = Field(description="succeeded, timed jobs read from the window")
    based_on: str = Field(description="the default price book version the proposal follows")
    tokens_per_second: str = Field(description="the rate turning GPU seconds into tokens")
    revenue_neutral: bool
    revenue_change: float | None = Field(
        description="proposed / current list tokens of the fitted jobs, minus one"
    )
    capabilities: list[CapabilityFitOut]
    unpriced: dict[str, int] = Field(description="jobs of capabilities the book no longer has")
    examples: list[ExampleOut]
    price_book: dict[str, Any] = Field(
        description="the proposed price book (`price-books activate` takes it as JSON)"
    )

    @classmethod
    def of(cls, report: FitReport) -> CostFitOut:
        proposal = report.proposal
        tracking = {t.capability: t for t in proposal.tracking}
        changes = {(c.capability, c.key): c for c in proposal.changes}
        return cls(
            since=report.since,
            until=report.until,
            engines=list(report.engines) if report.engines is not None else None,
            account_id=report.account_id,
            jobs=report.jobs,
            based_on=report.based_on,
            tokens_per_second=plain(proposal.tokens_per_second),
            revenue_neutral=proposal.revenue_neutral,
            revenue_change=proposal.revenue_change,
            capabilities=[_capability(f, changes, tracking.get(f.capability)) for f in report.fits],
            unpriced=report.unpriced,
            examples=[ExampleOut.model_validate(e, from_attributes=True) for e in report.examples],
            price_book=report.proposed_document(),
        )


def _capability(
    fit: cm.CapabilityFit,
    changes: dict[tuple[str, str], cp.AmountChange],
    tracking: cp.Tracking | None,
) -> CapabilityFitOut:
    terms = []
    for term in fit.terms:
        change = changes.get((fit.capability, term.key))
        terms.append(
            TermOut(
                key=term.key,
                label=term.label,
                seconds=term.seconds,
                stderr_s=term.stderr,
                current=plain(change.current) if change else "0",
                proposed=plain(change.proposed) if change else "0",
            )
        )
    memory = fit.memory
    return CapabilityFitOut(
        capability=fit.capability,
        fitted=fit.fitted,
        samples=fit.samples,
        outliers=fit.outliers,
        unreadable=fit.unreadable,
        r2=fit.r2,
        rmse_s=fit.rmse_s,
        mean_s=fit.mean_s,
        terms=terms,
        memory=MemoryOut.model_validate(memory, from_attributes=True) if memory else None,
        current_tokens_per_s=tracking.current_tokens_per_s if tracking else None,
        proposed_tokens_per_s=tracking.proposed_tokens_per_s if tracking else None,
        notes=list(fit.notes),
    )
