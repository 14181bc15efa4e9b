"""Request bodies have limits: a JSON body (or a webhook's) stops being read past 1 MiB,
and a multipart form's text (values, part names and headers) past 64 KiB or 64 parts.
Each once was read whole: 40 MiB parsed before the key was even checked."""

from __future__ import annotations

from pathlib import Path

from comfygate.entrypoints.api.middleware import MAX_BODY_BYTES
from tests.e2e.gateway_app import running_gateway
from tests.jobs_support import png_bytes


def _multipart(fields: list[tuple[str, str]], boundary: str = "B0UNDARY") -> tuple[bytes, str]:
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
        for name, value in fields
    ]
    image = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="p.png"\r\n'
        "Content-Type: image/png\r\n\r\n"
    ).encode() + png_bytes()
    body = "".join(parts).encode() + image + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def test_bodies_past_their_limits_are_refused(tmp_path: Path) -> None:
    with running_gateway(tmp_path) as gw:
        tenant = gw.tenant("acme", tokens=100)
        json_headers = {"Content-Type": "application/json"}
        big = b'{"tokens": 1, "idempotency_key": "' + b"x" * MAX_BODY_BYTES + b'"}'
        unauthenticated = gw.client.post(
            "/v1/admin/accounts/acct_x/grants", content=big, headers=json_headers
        )
        webhook = gw.client.post("/v1/payments/acme/webhook", content=b"x" * (MAX_BODY_BYTES + 1))
        half = b"x" * (MAX_BODY_BYTES // 2 + 1)  # sent chunked: no length declared
        streamed = gw.client.post("/v1/payments/acme/webhook", content=iter([half, half, half]))
        small = gw.client.post(
            "/v1/admin/accounts/acct_x/grants", content=b"{}", headers=json_headers
        )
        claims_multipart = gw.client.post(  # only the upload routes stream a form
            "/v1/payments/acme/webhook",
            content=big,
            headers={"Content-Type": "Multipart/Form-Data; boundary=x"},
        )
        chunked_json = gw.client.post(  # read, and refused, by FastAPI's own parsing
            "/v1/admin/accounts/acct_x/grants", content=iter([half, half, half]),
            headers=json_headers,
        )  # fmt: skip
        for refused in (unauthenticated, webhook, streamed, claims_multipart, chunked_json):
            assert refused.status_code == 413, refused.text
            assert refused.json()["code"] == "request_too_large"
        assert small.status_code == 401  # under the limit: the key is checked as ever

        names = [(f"{'n' * 190}{i:04d}", "") for i in range(400)]  # 78 KiB of names
        many = [(f"f{i}", "") for i in range(100)]
        for fields in (names, many):
            body, content_type = _multipart([*fields, ("capability", "colorize.person")])
            response = gw.client.post(
                "/v1/quotes", content=body, headers={**tenant.user, "Content-Type": content_type}
            )
            assert response.status_code == 422, response.text
            assert response.json()["code"] == "invalid_input"
            assert "form" in response.json()["detail"]
        body, content_type = _multipart([("capability", "colorize.person")])
        fine = gw.client.post(
            "/v1/quotes", content=body, headers={**tenant.user, "Content-Type": content_type}
        )
        assert fine.status_code == 201, fine.text


def test_an_upload_that_goes_on_past_its_closing_boundary_is_refused(tmp_path: Path) -> None:
    """The form's parser discards what follows the closing boundary: the request was
    read for as long as the client kept sending."""
    with running_gateway(tmp_path, max_upload_bytes=100_000) as gw:
        tenant = gw.tenant("acme", tokens=100)
        body, content_type = _multipart([("capability", "colorize.person")])
        headers = {**tenant.user, "Content-Type": content_type}
        tail = b"x" * (1 << 20)
        endless = gw.client.post("/v1/jobs", content=iter([body, *[tail] * 8]), headers=headers)
        assert endless.status_code == 413, endless.text
        assert endless.json()["code"] == "upload_too_large"
        assert gw.client.post("/v1/jobs", content=body, headers=headers).status_code == 202
        assert gw.container.accounts.balance(account_id=tenant.account_id).held == 10
        assert not list((tmp_path / "data" / "tmp").glob("upload-*"))
