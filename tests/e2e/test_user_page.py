"""The end user's page over HTTP: served without a key with its policy, its assets under
``/web``, no URL that leaves the gateway, every ``/v1`` path its script calls in the
API's schema, the way it pays (quote by upload, quote again by size, submit with the
quote and one Idempotency-Key) accepted by the API, and a script that node parses and
whose pure helpers (the SSE parser, idempotency keys, formatting) behave."""

from __future__ import annotations

import json
import re
import subprocess
from typing import Any

import pytest

from tests.e2e.gateway_app import Gateway
from tests.e2e.web_support import WEB, assert_no_outside_url, needs_node, run_script
from tests.jobs_support import png_bytes


def test_page_is_html_without_a_key_and_links_its_assets(gw: Gateway) -> None:
    page = gw.client.get("/app")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert page.headers["cache-control"] == "no-cache"
    for link in ('src="/web/app.js"', 'href="/web/app.css"', 'href="/web/base.css"'):
        assert link in page.text
    policy = page.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "script-src 'self'" in policy
    assert "connect-src 'self'" in policy
    # The photo picked and the result fetched with the key are shown as blob: URLs;
    # the dashboard has no need of them.
    assert "img-src 'self' blob:" in policy
    dashboard_policy = gw.client.get("/dashboard").headers["content-security-policy"]
    assert "img-src 'self';" in dashboard_policy


@pytest.mark.parametrize(
    ("name", "content_type"),
    [("app.js", "text/javascript"), ("app.css", "text/css")],
)
def test_assets_are_served_with_their_types(gw: Gateway, name: str, content_type: str) -> None:
    served = gw.client.get(f"/web/{name}")
    assert served.status_code == 200
    assert served.headers["content-type"].split(";")[0] == content_type
    assert served.headers["cache-control"] == "no-cache"
    assert served.content == WEB.joinpath(name).read_bytes()


def test_the_page_itself_is_not_an_asset_nor_in_the_api_schema(gw: Gateway) -> None:
    assert gw.client.get("/web/app.html").status_code == 404
    assert "/app" not in gw.client.get("/openapi.json").json()["paths"]


@pytest.mark.parametrize("name", ["app.html", "app.js", "app.css"])
def test_page_and_assets_name_no_outside_url(name: str) -> None:
    assert_no_outside_url(name)


def test_script_writes_no_markup_and_sends_what_the_api_needs() -> None:
    script = WEB.joinpath("app.js").read_text("utf-8")
    assert not re.search(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write", script)
    assert "new EventSource" not in script  # it cannot send the key
    for needed in (
        "Authorization: `Bearer ${state.key}`",
        '"Accept-Language": navigator.language',
        '"Idempotency-Key": quote.idempotencyKey',
        '"Idempotency-Key": state.orderKey.key',  # an order clicked again after a lost answer
        '"Last-Event-ID": lastEventId',
        "sessionStorage.setItem(KEY_STORAGE",
    ):
        assert needed in script


def _called_paths(script: str) -> set[str]:
    """The ``/v1`` paths in the script's string and template literals, each
    ``${...}`` made ``{}``, and cut at the query."""
    found = re.findall(r"[`\"'](/v1/[^`\"'?]*)", script)
    return {re.sub(r"\$\{[^}]*\}", "{}", path) for path in found}


def test_every_path_the_script_calls_is_in_the_api_schema(gw: Gateway) -> None:
    called = _called_paths(WEB.joinpath("app.js").read_text("utf-8"))
    assert {"/v1/quotes", "/v1/jobs", "/v1/jobs/{}/events", "/v1/jobs/{}/result"} <= called
    assert {"/v1/balance", "/v1/plans", "/v1/orders", "/v1/orders/{}", "/v1/capabilities"} <= called
    schema_paths = gw.client.get("/openapi.json").json()["paths"]
    patterns = [re.sub(r"\\\{[^}]*\\\}", "[^/]+", re.escape(p)) for p in schema_paths]
    for path in called:
        concrete = path.replace("{}", "x_1")
        assert any(re.fullmatch(p, concrete) for p in patterns), f"{path} is not in the API"


def test_the_pages_way_to_pay_is_one_charge_at_the_quoted_price(gw: Gateway) -> None:
    """What the script does: it reads the capabilities and their options, the first
    quote uploads the photo with the options as JSON, a change of option prices the
    size that quote read (JSON), and the submit names that quote with the options it
    read, with one Idempotency-Key for every attempt."""
    tenant = gw.tenant("page-payer", tokens=50)
    offered = gw.client.get("/v1/capabilities", headers=tenant.user).json()
    person = next(c for c in offered["capabilities"] if c["name"] == "colorize.person")
    assert person["served"] and [o["name"] for o in person["options"]] == ["upscale"]
    image = png_bytes((800, 600), seed=7)
    upload = {"image": ("photo.png", image, "image/png")}
    first = gw.client.post(
        "/v1/quotes",
        files=upload,
        data={"capability": "colorize.person", "options": json.dumps({"upscale": 1})},
        headers=tenant.user,
    )
    assert first.status_code == 201, first.text
    size = {"width": first.json()["width"], "height": first.json()["height"]}
    assert size == {"width": 800, "height": 600}
    again = gw.client.post(
        "/v1/quotes",
        json={"capability": "colorize.person", **size, "options": {"upscale": 2}},
        headers=tenant.user,
    )
    assert again.status_code == 201, again.text
    quote = again.json()
    assert quote["tokens"] == 16  # 10 + 0.48 MP x 2 + 5 for the upscale, rounded
    options = json.dumps(quote["options"])
    form = {"capability": "colorize.person", "options": options, "quote_id": quote["quote_id"]}
    headers = {**tenant.user, "Idempotency-Key": "app-00ff"}
    answers = [
        gw.client.post("/v1/jobs", files=upload, data=form, headers=headers) for _ in range(2)
    ]
    assert [a.status_code for a in answers] == [202, 202], answers[0].text
    jobs = [a.json() for a in answers]
    assert jobs[0]["id"] == jobs[1]["id"]
    assert jobs[0]["quote_id"] == quote["quote_id"] and jobs[0]["tokens"] == 16
    balance = gw.client.get("/v1/balance", headers=tenant.user).json()
    assert balance["available"] == 50 - 16  # held or charged, once


def node(*args: str) -> subprocess.CompletedProcess[str]:
    return run_script("app.js", *args)


@needs_node
def test_script_parses_in_node() -> None:
    checked = node("--check")
    assert checked.returncode == 0, checked.stderr


SSE_CALLS = r"""
const d = require(process.argv[1]);
const parser = d.sseParser();
const chunks = [
  "id: 1\nevent: queued\nda", "ta: {\"a\":1}\n", "\n: keep-alive\n\n",
  "id: 2\r", "\nevent: progress\r\ndata: line one\r\ndata:  line two\r\n\r\n",
  "data: no id or event of its own\n\n",
  "event: empty\n\n",
  "retry: 5\nid: 7\nevent: succeeded\ndata:{\"b\":2}\n\nid: 8\nevent: cut sh",
];
const out = chunks.map((chunk) => parser.push(chunk));
const resumed = d.sseParser(parser.lastEventId);
console.log(JSON.stringify({
  out, last: parser.lastEventId, resumed: [resumed.lastEventId, resumed.push("data: x\n\n")],
  cleared: d.sseParser("3").push("id\ndata: y\n\n"),
}));
"""


@needs_node
def test_sse_parser_in_node() -> None:
    ran = node("-e", SSE_CALLS)
    assert ran.returncode == 0, ran.stderr
    result: dict[str, Any] = json.loads(ran.stdout)
    out = result["out"]
    assert out[0] == [] and out[1] == []  # a frame is whole at its blank line only
    assert out[2] == [{"id": "1", "event": "queued", "data": '{"a":1}'}]  # comment: nothing
    assert out[3] == []  # a "\r" at the end may be half of "\r\n"
    assert out[4] == [{"id": "2", "event": "progress", "data": "line one\n line two"}]
    assert out[5] == [{"id": "2", "event": "message", "data": "no id or event of its own"}]
    assert out[6] == []  # no data: no event
    assert out[7] == [{"id": "7", "event": "succeeded", "data": '{"b":2}'}]
    # Event 8 was cut short: a reconnection asks for what follows 7, not 8.
    assert result["last"] == "7"
    assert result["resumed"] == ["7", [{"id": "7", "event": "message", "data": "x"}]]
    assert result["cleared"] == [{"id": "", "event": "message", "data": "y"}]


HELPER_CALLS = r"""
const d = require(process.argv[1]);
const now = Date.UTC(2026, 10, 28, 18, 2, 30);
const job = (fields) => ({state: "succeeded", tokens: 11, tokens_charged: null, failure: null,
                          result: {url: "/v1/jobs/j/result"}, ...fields});
console.log(JSON.stringify({
  keys: [d.idempotencyKey(Uint8Array.from([0, 1, 171, 255])),
         d.idempotencyKey(crypto.getRandomValues(new Uint8Array(16))),
         d.idempotencyKey(crypto.getRandomValues(new Uint8Array(16)))],
  tokens: [d.formatTokens(1), d.formatTokens(11), d.formatTokens(1210)],
  time: d.formatTime("2026-11-28T18:12:30.5+00:00"),
  locks: [d.formatLock("2026-11-28T18:12:00Z", now), d.formatLock("2026-11-28T18:02:00Z", now)],
  events: [d.describeEvent("queued", {tokens: 11}),
           d.describeEvent("queued", {retry: true, reason: "worker_lost"}),
           d.describeEvent("started", {attempt: 1}),
           d.describeEvent("progress", {fraction: 0.4, message: "colorizing"}),
           d.describeEvent("progress", {fraction: 1})],
  outcomes: [d.jobOutcome(job({tokens_charged: 11})),
             d.jobOutcome(job({tokens_charged: 11, result: null})),
             d.jobOutcome(job({state: "running"})),
             d.jobOutcome(job({state: "failed", tokens_charged: 0,
                               failure: {code: "worker_error", reason: "ComfyUI is down"}})),
             d.jobOutcome(job({state: "canceled", failure: {code: "canceled", reason: null}}))],
  paths: [d.historyPath(null), d.historyPath("job_01ab")],
  problems: [d.problemMessage(401, {detail: "invalid API key", code: "unauthenticated"}),
             d.problemMessage(403, null),
             d.problemMessage(402, {detail: "11 tokens needed, 3 available",
                                    code: "insufficient_balance"}),
             d.problemMessage(0, {detail: "Could not reach the gateway (Failed to fetch)."})],
  controls: [
    d.optionControl({name: "upscale", type: "number", default: 1, description: "Upscale",
                     min: "1", max: "4", choices: []}),
    d.optionControl({name: "strength", type: "number", default: 0.5, description: "",
                     min: "0", max: "1", choices: []}),
    d.optionControl({name: "fp16", type: "boolean", default: true, description: "Half floats",
                     min: null, max: null, choices: []}),
    d.optionControl({name: "model", type: "choice", default: "tiny", description: "Model",
                     min: null, max: null, choices: ["tiny", "large"]}),
    d.optionControl({name: "steps", type: "integer", default: 20, description: "Steps",
                     min: "1", max: null, choices: []}),
    d.optionControl({name: "passes", type: "integer", default: 2, description: "Passes",
                     min: "1", max: "3", choices: []})],
  values: [d.optionValue({type: "number"}, "2"), d.optionValue({type: "boolean"}, false),
           d.optionValue({type: "choice"}, "large"), d.optionValue({type: "integer"}, "30"),
           d.optionValue({type: "number", default: 1}, " ")],
}));
"""


@needs_node
def test_pure_helpers_in_node() -> None:
    ran = node("-e", HELPER_CALLS)
    assert ran.returncode == 0, ran.stderr
    out: dict[str, Any] = json.loads(ran.stdout)
    fixed, one, other = out["keys"]
    assert fixed == "app-0001abff"
    assert re.fullmatch(r"app-[0-9a-f]{32}", one) and one != other
    assert out["tokens"] == ["1 token", "11 tokens", "1,210 tokens"]
    assert out["time"] == "2026-11-29 02:12"  # in the zone node runs in (Asia/Shanghai)
    assert out["locks"] == ["02:12 (10 min)", "02:02 (expired)"]
    assert out["events"] == [
        {"fraction": 0, "text": "Queued for a worker"},
        {"fraction": 0, "text": "Queued again (worker_lost)"},
        {"fraction": None, "text": "Running"},
        {"fraction": 0.4, "text": "colorizing, 40%"},
        {"fraction": 1, "text": "100%"},
    ]
    assert out["outcomes"] == [
        "Succeeded: 11 tokens charged",
        "Succeeded: 11 tokens charged (the result is no longer kept)",
        "Running: 11 tokens on hold",
        "Failed: ComfyUI is down (nothing charged)",
        "Canceled: canceled (nothing charged)",
    ]
    assert out["paths"] == ["/v1/jobs?limit=10", "/v1/jobs?limit=10&cursor=job_01ab"]
    assert out["controls"] == [
        {"kind": "number", "label": "Upscale", "min": "1", "max": "4", "step": "any",
         "value": "1"},  # a number: 1.5 too, so not a list of 1 to 4
        {"kind": "number", "label": "strength", "min": "0", "max": "1", "step": "any",
         "value": "0.5"},
        {"kind": "checkbox", "label": "Half floats", "value": True},
        {"kind": "select", "label": "Model", "values": ["tiny", "large"], "value": "tiny"},
        {"kind": "number", "label": "Steps", "min": "1", "max": None, "step": "1", "value": "20"},
        {"kind": "select", "label": "Passes", "values": ["1", "2", "3"], "value": "2"},
    ]  # fmt: skip
    assert out["values"] == [2, False, "large", 30, 1]  # an emptied field: the default
    unauthenticated, forbidden, broke, unreachable = out["problems"]
    assert "API key" in unauthenticated
    assert unauthenticated.endswith("invalid API key (unauthenticated)")
    assert "user key" in forbidden and forbidden.endswith("HTTP 403")
    assert broke == "11 tokens needed, 3 available (insufficient_balance)"
    assert unreachable == "Could not reach the gateway (Failed to fetch)."
