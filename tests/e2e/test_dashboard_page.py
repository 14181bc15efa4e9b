"""The operator dashboard page over HTTP: served without a key, its two assets and
nothing else under ``/web``, no URL that would leave the gateway, and a script that node
parses and whose pure helpers (formatting, the report query, axes, shades) behave."""

from __future__ import annotations

import json
import re
import subprocess
from typing import Any
from urllib.parse import parse_qsl

import pytest

from tests.e2e.gateway_app import Gateway
from tests.e2e.web_support import WEB, assert_no_outside_url, needs_node, run_script


def test_page_is_html_without_a_key_and_links_its_assets(gw: Gateway) -> None:
    page = gw.client.get("/dashboard")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert page.headers["cache-control"] == "no-cache"
    assert 'src="/web/dashboard.js"' in page.text
    assert 'href="/web/base.css"' in page.text and 'href="/web/dashboard.css"' in page.text
    policy = page.headers["content-security-policy"]
    assert "connect-src 'self'" in policy and "script-src 'self'" in policy


@pytest.mark.parametrize(
    ("name", "content_type"),
    [("dashboard.js", "text/javascript"), ("dashboard.css", "text/css"), ("base.css", "text/css")],
)
def test_assets_are_served_with_their_types(gw: Gateway, name: str, content_type: str) -> None:
    served = gw.client.get(f"/web/{name}")
    assert served.status_code == 200
    assert served.headers["content-type"].split(";")[0] == content_type
    assert served.headers["cache-control"] == "no-cache"
    assert served.content == WEB.joinpath(name).read_bytes()


@pytest.mark.parametrize(
    "path",
    [
        "/web/x",
        "/web/routes.py",  # beside the assets, but not one of them
        "/web/__init__.py",
        "/web/dashboard.html",
        # A client resolves literal dots before sending; encoded, they reach the server
        # as /web/../routes.py and /web/../../api/app.py.
        "/web/%2e%2e",
        "/web/..%2froutes.py",
        "/web/%2e%2e%2f%2e%2e%2fapi%2fapp.py",
    ],
)
def test_nothing_else_is_served_under_web(gw: Gateway, path: str) -> None:
    served = gw.client.get(path)
    assert served.status_code == 404
    assert served.headers["content-type"] == "application/problem+json"
    assert "import" not in served.text


def test_pages_are_not_in_the_api_schema(gw: Gateway) -> None:
    paths = gw.client.get("/openapi.json").json()["paths"]
    assert not [p for p in paths if p == "/dashboard" or p.startswith("/web")]


@pytest.mark.parametrize("name", ["dashboard.html", "dashboard.js", "dashboard.css", "base.css"])
def test_page_and_assets_name_no_outside_url(name: str) -> None:
    assert_no_outside_url(name)


def test_script_reads_the_usage_report_and_writes_no_markup() -> None:
    script = WEB.joinpath("dashboard.js").read_text("utf-8")
    assert "fetch(`/v1/reports/usage?" in script
    assert "Authorization: `Bearer ${key}`" in script
    assert "sessionStorage" in script
    assert not re.search(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write", script)


def node(*args: str) -> subprocess.CompletedProcess[str]:
    return run_script("dashboard.js", *args)


@needs_node
def test_script_parses_in_node() -> None:
    checked = node("--check")
    assert checked.returncode == 0, checked.stderr


HELPER_CALLS = """
const d = require(process.argv[1]);
const now = Date.UTC(2026, 10, 28, 9, 0, 42);
const series = [{calls: [1, 0, 2]}, {calls: [3, 4, 0]}];
console.log(JSON.stringify({
  counts: [d.formatField("calls", 1210), d.formatField("list_tokens", 0)],
  average: d.formatField("avg_tokens_per_call", 11.8234),
  seconds: [d.formatField("inference_p50_s", 2.1), d.formatField("inference_p95_s", 123.4),
            d.formatField("gpu_seconds_per_token", 0.19123)],
  nulls: [d.formatField("inference_p95_s", null), d.formatField("calls", null),
          d.formatField("name", null)],
  text: d.formatField("name", "<b>Acme</b>"),
  day: d.reportQuery("28d", now, "acct_1"),
  hour: d.reportQuery("24h", now, ""),
  labels: [d.bucketLabel("2026-11-21T00:00:00+08:00", "day"),
           d.bucketLabel("2026-11-21T00:00:00+08:00", "day", true),
           d.bucketLabel("2026-11-21T13:00:00+08:00", "hour"),
           d.bucketLabel("2026-11-21T13:00:00+08:00", "hour", true)],
  ceilings: [0, 3, 10, 11, 56, 1210, 9001].map(d.niceCeiling),
  totals: d.bucketTotals(series, "calls", 3),
  shades: [d.heatColor(0, 5), d.heatColor(1, 5), d.heatColor(5, 5), d.heatColor(0, 0)],
  colors: [...d.colorsFor(["b", "a", "b"]).keys()],
  problems: [d.problemMessage(403, {detail: "admins only"}), d.problemMessage(401, null),
             d.problemMessage(422, {detail: "since needs a time zone"}),
             d.problemMessage(502, null)],
  partial: [
    d.partialBuckets(["2026-11-20T00:00:00+08:00", "2026-11-21T00:00:00+08:00",
                      "2026-11-22T00:00:00+08:00"], "day",
                     "2026-11-20T09:00:00Z", "2026-11-22T03:00:00Z"),
    d.partialBuckets(["2026-11-21T00:00:00+08:00", "2026-11-22T00:00:00+08:00"], "day",
                     "2026-11-20T16:00:00Z", "2026-11-22T16:00:00Z"),
    d.partialBuckets(["2026-11-21T13:00:00+08:00", "2026-11-21T14:00:00+08:00"], "hour",
                     "2026-11-21T05:00:00Z", "2026-11-21T06:30:00Z")],
}));
"""


@needs_node
def test_pure_helpers_in_node() -> None:
    ran = node("-e", HELPER_CALLS)
    assert ran.returncode == 0, ran.stderr
    out: dict[str, Any] = json.loads(ran.stdout)
    assert out["counts"] == ["1,210", "0"]
    assert out["average"] == "11.82"
    assert out["seconds"] == ["2.1 s", "123 s", "0.191 s"]
    assert out["nulls"] == ["—", "—", "—"]
    assert out["text"] == "<b>Acme</b>"  # shown as text by the page, never parsed
    assert dict(parse_qsl(out["day"])) == {
        "since": "2026-10-31T09:00:00Z",
        "until": "2026-11-28T09:00:00Z",
        "bucket": "day",
        "account_id": "acct_1",
    }
    hourly = {"since": "2026-11-27T09:00:00Z", "until": "2026-11-28T09:00:00Z", "bucket": "hour"}
    assert dict(parse_qsl(out["hour"])) == hourly  # no account_id when none is typed
    assert out["labels"] == ["11-21", "2026-11-21", "13:00", "2026-11-21 13:00"]
    assert out["ceilings"] == [1, 3, 10, 12, 60, 1500, 10000]
    assert out["totals"] == [4, 4, 2]
    none, few, most, empty = out["shades"]
    assert none == empty == "rgb(238,241,245)" and most == "rgb(8,69,148)"
    assert sum(map(int, re.findall(r"\d+", few))) > sum(map(int, re.findall(r"\d+", most)))
    assert out["colors"] == ["a", "b"]
    forbidden, unauthenticated, invalid, bare = out["problems"]
    assert "operator" in forbidden and forbidden.endswith("admins only")
    assert "API key" in unauthenticated and unauthenticated.endswith("HTTP 401")
    assert invalid == "since needs a time zone"
    assert bare == "HTTP 502"
    # 09:00 UTC is 17:00 in Shanghai: the first day is cut; 03:00 UTC the next day ends
    # at 11:00 there, inside the last; a window of whole days cuts none.
    assert out["partial"] == [[True, False, True], [False, False], [False, True]]
