"""Jobs over HTTP: submit, status, list, progress stream, cancel, result, share links.

``POST /v1/jobs`` answers 202 with the new job, or 200 with ``duplicate_of`` when the
same image was already submitted (nothing charged). Another account's job is 404.
"""

from __future__ import annotations

import functools
import json
from collections.abc import AsyncIterator
from typing import Annotated

import anyio.to_thread
from fastapi import APIRouter, Body, Header, Query, Request, Response, status
from fastapi.responses import FileResponse, StreamingResponse

from comfygate.domain.errors import InvalidInputError
from comfygate.domain.jobs import JobState
from comfygate.entrypoints.api.deps import (
    ContainerDep,
    CursorQuery,
    PrincipalDep,
    check_account_filter,
    get_container,
    run_on_hot_path,
)
from comfygate.entrypoints.api.schemas_jobs import JobOut, JobPageOut, ShareIn, ShareOut
from comfygate.entrypoints.api.uploads import (
    declared_size,
    form_options,
    read_upload,
    whole_number,
)
from comfygate.services.identity_types import Principal
from comfygate.services.job_ports import Job, JobEvent
from comfygate.services.job_queries import JobPage, ResultFile
from comfygate.services.jobs import SubmitRequest

router = APIRouter(prefix="/v1", tags=["jobs"])

_MEDIA_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}

_SUBMIT_FORM = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["image", "capability"],
                    "properties": {
                        "image": {"type": "string", "format": "binary"},
                        "capability": {"type": "string", "example": "colorize.person"},
                        "upscale": {"type": "string", "example": "2"},
                        "options": {"type": "string", "description": "a JSON object"},
                        "quote_id": {"type": "string", "description": "a locked quote"},
                        "width": {"type": "integer", "description": "must match the image"},
                        "height": {"type": "integer", "description": "must match the image"},
                    },
                }
            }
        },
    }
}


def submit_request(fields: dict[str, str], idempotency_key: str | None) -> SubmitRequest:
    """The use case's request from the form's text fields."""
    capability = fields.get("capability", "").strip()
    if not capability:
        raise InvalidInputError("the form needs a capability field", field="capability")
    options = form_options(fields)
    if idempotency_key is not None and not 0 < len(idempotency_key) <= 200:
        raise InvalidInputError("Idempotency-Key must be 1 to 200 characters")
    return SubmitRequest(
        capability=capability,
        options=options,
        quote_id=fields.get("quote_id", "").strip() or None,
        declared_size=declared_size(fields),
        idempotency_key=idempotency_key,
    )


@router.post(
    "/jobs",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobOut,
    summary="Submit an image: price it, hold the tokens, queue the job",
    responses={200: {"model": JobOut, "description": "a duplicate: the earlier job"}},
    openapi_extra=_SUBMIT_FORM,
)
async def submit_job(
    request: Request,
    principal: PrincipalDep,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> Response:
    container = get_container(request)  # not a dependency: one resolution less per request
    jobs = container.jobs
    form = await read_upload(
        request,
        file_field="image",
        dest_dir=jobs.upload_dir,
        max_bytes=container.settings.max_upload_bytes,
        offload=container.serial.call,  # the file's creation and close: no pool hand-off
    )
    try:
        req = submit_request(form.fields, idempotency_key)
    except BaseException:
        form.file.path.unlink(missing_ok=True)
        raise
    submit = functools.partial(
        jobs.submission.submit, principal=principal, upload=form.file, request=req
    )
    outcome = await run_on_hot_path(request, submit)
    body = JobOut.of(outcome.job, duplicate_of=outcome.duplicate_of)
    code = status.HTTP_200_OK if outcome.duplicate_of else status.HTTP_202_ACCEPTED
    # Serialised once, by pydantic-core (not dumped to a dict and then to JSON again).
    return Response(body.model_dump_json(), status_code=code, media_type="application/json")


@router.get("/jobs/{job_id}", response_model=JobOut, summary="A job's state")
async def get_job(job_id: str, container: ContainerDep, principal: PrincipalDep) -> JobOut:
    queries = container.jobs.queries
    job = await anyio.to_thread.run_sync(
        functools.partial(queries.get, principal=principal, job_id=job_id)
    )
    return JobOut.of(job)


@router.get("/jobs", response_model=JobPageOut, summary="Jobs, newest first")
async def list_jobs(
    container: ContainerDep,
    principal: PrincipalDep,
    cursor: CursorQuery,
    state: Annotated[JobState | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    account_id: Annotated[
        str | None, Query(max_length=40, description="operators: one account's jobs")
    ] = None,
) -> JobPageOut:
    read = functools.partial(
        container.jobs.queries.list,
        principal=principal,
        state=state,
        limit=limit,
        cursor=cursor,
        account_id=account_id,
    )

    def answer() -> JobPage:
        check_account_filter(container, principal, account_id)
        return read()

    page = await anyio.to_thread.run_sync(answer)
    return JobPageOut(items=[JobOut.of(j) for j in page.jobs], next_cursor=page.next_cursor)


def _sse(event: JobEvent | None) -> bytes:
    if event is None:
        return b": keep-alive\n\n"
    data = json.dumps({"job_id": event.job_id, **event.data}, default=str)
    return f"id: {event.seq}\nevent: {event.kind}\ndata: {data}\n\n".encode()


@router.get(
    "/jobs/{job_id}/events",
    summary="Progress as Server-Sent Events (history first, then live, until the end)",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"text/event-stream": {}}},
        204: {"description": "The stream is over: Last-Event-ID is the job's last event"},
    },
)
async def job_events(
    job_id: str,
    container: ContainerDep,
    principal: PrincipalDep,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
) -> Response:
    jobs = container.jobs
    await anyio.to_thread.run_sync(
        functools.partial(jobs.queries.get, principal=principal, job_id=job_id)
    )
    # A number this stream sent; anything else replays the job's events from the start.
    after = whole_number(last_event_id or "", digits=18) or 0
    ended = functools.partial(jobs.events.ended, job_id, after_seq=after)
    if after and await anyio.to_thread.run_sync(ended):
        # An EventSource reconnects after a 200 that ends, and stops at a 204.
        return Response(status_code=204, headers={"Cache-Control": "no-cache"})

    async def stream() -> AsyncIterator[bytes]:
        async for event in jobs.events.stream(job_id, after_seq=after):
            yield _sse(event)

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)


@router.post("/jobs/{job_id}/cancel", response_model=JobOut, summary="Cancel; releases the hold")
async def cancel_job(job_id: str, container: ContainerDep, principal: PrincipalDep) -> JobOut:
    """The job says who canceled it (its owner, an admin of the account or an
    operator), and the audit log names them: the hold's release is the system's."""
    jobs = container.jobs
    job = await anyio.to_thread.run_sync(
        functools.partial(jobs.queries.get, principal=principal, job_id=job_id)
    )
    reason = _cancel_reason(principal, job)
    done = await jobs.dispatcher.cancel(job, reason=reason)
    if done.state is JobState.CANCELED and done.failure_reason == reason:
        entry = functools.partial(
            container.audit.record, actor=principal, action="jobs.cancel", target=job.id,
            account_id=job.account_id, details={"reason": reason}, once_for=job.id,
        )  # fmt: skip
        await anyio.to_thread.run_sync(entry)
    return JobOut.of(done)


def _cancel_reason(principal: Principal, job: Job) -> str:
    if principal.user_id == job.user_id:
        return "canceled by the customer"
    if principal.is_operator:
        return "canceled by an operator"
    return "canceled by an admin of the account"


def _file(result: ResultFile) -> FileResponse:
    suffix = result.path.suffix.lower()
    return FileResponse(
        result.path,
        media_type=_MEDIA_TYPES.get(suffix, "application/octet-stream"),
        filename=f"{result.job.id}{suffix}",
        # A shared link carries no credentials a cache could key on: no cache keeps a
        # copy past the link's expiry or the result's retention.
        headers={
            "X-Comfygate-Engine": result.job.engine or "unknown",
            "Cache-Control": "private, no-store",
        },
    )


@router.get(
    "/jobs/{job_id}/result",
    response_class=FileResponse,
    summary="The result image (owner only)",
    responses={200: {"content": {"image/png": {}}}},
)
async def job_result(job_id: str, container: ContainerDep, principal: PrincipalDep) -> FileResponse:
    queries = container.jobs.queries
    result = await anyio.to_thread.run_sync(
        functools.partial(queries.result, principal=principal, job_id=job_id)
    )
    return _file(result)


@router.post("/jobs/{job_id}/share", response_model=ShareOut, summary="A signed, expiring link")
async def share_job(
    job_id: str,
    container: ContainerDep,
    principal: PrincipalDep,
    body: Annotated[ShareIn | None, Body()] = None,
) -> ShareOut:
    expires_in_s = (body or ShareIn()).expires_in_s
    queries = container.jobs.queries
    link = await anyio.to_thread.run_sync(
        functools.partial(
            queries.share, principal=principal, job_id=job_id, expires_in_s=expires_in_s
        )
    )
    return ShareOut(url=f"/v1/shared/{link.token}", token=link.token, expires_at=link.expires_at)


@router.get(
    "/shared/{token}",
    response_class=FileResponse,
    summary="A shared result (no key: the signed token is the permission)",
    responses={200: {"content": {"image/png": {}}}},
)
async def shared_result(token: str, container: ContainerDep) -> FileResponse:
    queries = container.jobs.queries
    result = await anyio.to_thread.run_sync(functools.partial(queries.shared_result, token=token))
    return _file(result)
