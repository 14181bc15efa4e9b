"""The web pages in a real browser (headless Chromium over the DevTools protocol)
against a real gateway: the dashboard draws the report, the user page pays for a
photo and shows the result. Skipped where no Chromium is installed."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from comfygate import bootstrap
from comfygate.domain import analytics as da
from comfygate.domain.pricing_document import price_book_to_document
from tests.e2e.browser import Page, chromium, page
from tests.jobs_support import job_rows, new_customer, png_bytes
from tests.reports_support import Use, new_account, store_usage

BROWSER = chromium()
COUNT_POSTS = (
    "window.posts = {}; const send = window.fetch; window.fetch = (url, init) => {"
    " if (init && init.method === 'POST') window.posts[url] = (window.posts[url] || 0) + 1;"
    " return send(url, init); }"
)
"""Counts the page's POSTs by path, in ``window.posts``."""
pytestmark = pytest.mark.skipif(BROWSER is None, reason="no Chromium installed")


def open_app(browser: Page, url: str, api_key: str) -> None:
    """The user page with ``api_key`` typed in before (kept in the tab's session)."""
    browser.open(f"{url}/app")
    browser.run(f"sessionStorage.setItem('comfygate.app.key', {json.dumps(api_key)})")
    browser.reload()


def test_the_dashboard_draws_the_report(served: tuple[bootstrap.Container, str]) -> None:
    """Totals, one heatmap cell per weekday and hour, the tables; an account name
    that is markup stays text."""
    container, url = served
    issued = container.identity.bootstrap_operator()
    assert issued is not None and BROWSER is not None
    hostile = new_account(container.engine, '<img src=x onerror="window.owned=1">Evil')
    acme = new_account(container.engine, "Acme Photo")
    now = datetime.now(UTC)
    store_usage(container.engine, [
        Use(acme, "colorize.person", da.SUCCEEDED, 11, 11, 2.0, None, now - timedelta(hours=3)),
        Use(acme, "colorize.person", da.FAILED, 0, 11, None, "timeout", now - timedelta(hours=2)),
        Use(hostile, "colorize.building", da.SUCCEEDED, 17, 17, 4.0, None,
            now - timedelta(days=2)),
    ])  # fmt: skip
    with page(BROWSER) as browser:
        browser.open(f"{url}/dashboard")
        key = json.dumps(issued.api_key)
        browser.run(f"sessionStorage.setItem('comfygate.dashboard.key', {key})")
        browser.reload()
        browser.wait_for("document.getElementById('status').textContent.startsWith('Loaded')")
        totals = browser.run(
            "Object.fromEntries([...document.querySelectorAll('[data-total]')]"
            ".map((e) => [e.dataset.total, e.textContent]))"
        )
        assert totals["calls"] == "3" and totals["failed"] == "1"
        assert totals["tokens_charged"] == "28" and totals["avg_tokens_per_call"] == "14"
        assert browser.run("document.querySelectorAll('#heatmap rect').length") == 7 * 24
        names = browser.run(
            "[...document.querySelectorAll('#top-accounts tbody tr')]"
            ".map((row) => row.cells[0].textContent)"
        )
        assert names == ['<img src=x onerror="window.owned=1">Evil', "Acme Photo"]
        assert browser.run("document.querySelectorAll('main img').length") == 0
        assert browser.run("window.owned === undefined")
        failures = browser.run("document.querySelector('#failures tbody').textContent")
        assert "timeout" in failures


def test_the_user_page_quotes_pays_and_shows_the_result(
    served: tuple[bootstrap.Container, str], tmp_path: Path
) -> None:
    """The seed's worked example in the browser: 50 tokens, an 800x600 portrait,
    quoted 11, paid once, colorized, 39 left."""
    container, url = served
    assert BROWSER is not None
    customer = new_customer(container, tokens=50)
    photo = tmp_path / "grandma.png"
    photo.write_bytes(png_bytes((800, 600)))
    with page(BROWSER) as browser:
        open_app(browser, url, customer.api_key)
        browser.wait_for("document.getElementById('balance').textContent.includes('50')")
        browser.choose_file("input[type=file]", photo)
        quoted = browser.wait_for("document.getElementById('quote-tokens').textContent")
        assert quoted.startswith("11")
        # The kinds and their options come from /v1/capabilities, not from the page.
        kinds = browser.run(
            "[...document.forms['job-form'].capability.options].map((o) => o.value)"
        )
        assert kinds == ["colorize.person", "colorize.building"]
        upscale = "document.querySelector('[data-option=upscale]')"
        assert browser.run(f"[{upscale}.type, {upscale}.min, {upscale}.max]") == [
            "number", "1", "4",
        ]  # fmt: skip
        change = f" {upscale}.dispatchEvent(new Event('change', {{bubbles: true}}))"
        # A value out of range is the user's to mend: said, and left as typed (it once
        # read the capabilities again and put every option back to its default).
        browser.run(f"{upscale}.value = '10';{change}")
        said = browser.wait_for(
            "document.getElementById('status').className === 'error' &&"
            " document.getElementById('status').textContent"
        )
        assert "between 1 and 4" in said and browser.run(f"{upscale}.value") == "10"
        for value, tokens in (("1.5", "16"), ("1", "11")):  # 10 + 0.96 (+ 5 upscaled)
            browser.run(f"{upscale}.value = '{value}';{change}")
            browser.wait_for(
                "!document.getElementById('quote').classList.contains('stale') &&"
                f" document.getElementById('quote-tokens').textContent.startsWith('{tokens} ')"
            )
        # Count what the page sends: the gateway's duplicate rule would turn a second
        # submission into the first job anyway.
        browser.run(COUNT_POSTS)
        browser.run(
            "document.getElementById('pay').click(); document.getElementById('pay').click()"
        )
        state = browser.wait_for(
            "/Succeeded|Failed|Canceled/.test(document.getElementById('job-state').textContent)"
            " && document.getElementById('job-state').textContent"
        )
        assert state.startswith("Succeeded") and "11 tokens" in state
        width = browser.wait_for("document.getElementById('after').naturalWidth")
        assert width == 800
        browser.wait_for("document.getElementById('balance').textContent.includes('39')")
        assert browser.run("window.posts['/v1/jobs']") == 1
    assert job_rows(container, customer.account_id) == 1  # two clicks, one job
    assert container.accounts.balance(account_id=customer.account_id).available == 39


def test_the_user_page_follows_a_price_book_changed_under_it(
    served: tuple[bootstrap.Container, str], tmp_path: Path
) -> None:
    """A new book drops the upscale option: the page's next quote is refused
    (invalid_option), and it reads the capabilities again instead of failing every
    quote until the key was typed in again."""
    container, url = served
    assert BROWSER is not None
    customer = new_customer(container, tokens=50)
    photo = tmp_path / "photo.png"
    photo.write_bytes(png_bytes((800, 600)))
    with page(BROWSER) as browser:
        open_app(browser, url, customer.api_key)
        browser.choose_file("input[type=file]", photo)
        assert (
            browser.wait_for("document.getElementById('quote-tokens').textContent") == "11 tokens"
        )
        doc = price_book_to_document(container.pricing.price_books.show().book)
        doc["version"] = "no-upscale-2"
        for capability in doc["capabilities"].values():
            capability["base"], capability["options"] = "20", {}
        container.pricing.price_books.activate(doc)
        browser.run(
            "const up = document.querySelector('[data-option=upscale]'); up.value = '2';"
            " up.dispatchEvent(new Event('change', {bubbles: true}))"
        )
        shown = browser.wait_for(
            "document.getElementById('quote-book').textContent === 'no-upscale-2' &&"
            " document.getElementById('quote-tokens').textContent"
        )
        assert shown == "21 tokens"  # 20 + 0.96
        assert browser.run("document.querySelector('[data-option=upscale]') === null")


def test_a_double_click_on_a_plan_places_one_order(served: tuple[bootstrap.Container, str]) -> None:
    container, url = served
    assert BROWSER is not None
    customer = new_customer(container, tokens=0)
    with page(BROWSER) as browser:
        open_app(browser, url, customer.api_key)
        browser.wait_for("document.getElementById('balance').textContent.includes('0')")
        browser.run("document.getElementById('buy').click()")
        browser.wait_for("document.querySelectorAll('#plan-list button').length > 0")
        browser.run(COUNT_POSTS)
        browser.run(
            "const order = document.querySelector('#plan-list button');"
            " order.click(); order.click()"
        )
        browser.wait_for("!document.getElementById('order').hidden")
        shown = browser.run("document.querySelector('[data-order=id]').textContent")
        assert browser.run("window.posts") == {"/v1/orders": 1}
    with container.engine.connect() as conn:
        orders = conn.exec_driver_sql("SELECT id, state FROM orders").all()
    assert [(order_id, state) for order_id, state in orders] == [(shown, "pending")]
