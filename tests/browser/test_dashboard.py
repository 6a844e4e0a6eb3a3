"""The Streamlit view in a real headless Chromium: pages render, charts draw, admin sign-in works."""
from __future__ import annotations

import pytest

from tests.browser.conftest import ADMIN_SECRET

pytestmark = pytest.mark.browser


HEADINGS = {"Compare": "Compare policies", "Submit": "Submit a task", "Admin": "Admin"}


def go(page, name: str) -> None:
    page.get_by_text(name, exact=True).first.click()
    page.wait_for_selector(f"h2:has-text('{HEADINGS[name]}')", timeout=30_000)


def no_errors(page) -> None:
    body = page.inner_text("body")
    assert "Traceback" not in body
    assert "Something went wrong" not in body
    assert page.locator("[data-testid='stException']").count() == 0


def test_compare_draws_its_charts_from_a_small_result_set(page) -> None:
    go(page, "Compare")
    page.wait_for_selector("text=Latency distribution (CDF)", timeout=30_000)
    page.wait_for_selector(".vega-embed", timeout=30_000)
    no_errors(page)
    # CDF, SLO by priority, cost, placement mix, utilisation, GPU allocation, fragmentation
    page.wait_for_function("document.querySelectorAll('.vega-embed').length >= 6", timeout=30_000)
    body = page.inner_text("body")
    for policy in ("least-loaded", "fastest-feasible", "fgd"):
        assert policy in body
    assert page.get_by_text("Download summary (CSV)").count() == 1


def test_submit_with_the_router_down_says_so(page) -> None:
    go(page, "Submit")
    page.get_by_role("button", name="Submit").click()
    page.wait_for_selector("text=is not answering", timeout=30_000)
    no_errors(page)


def test_admin_refuses_a_wrong_secret_and_accepts_the_right_one(page) -> None:
    go(page, "Admin")
    box = page.get_by_label("Admin secret")
    box.fill("not-the-secret")
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_selector("text=Wrong secret.", timeout=30_000)
    box.fill(ADMIN_SECRET)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_selector("text=Signed in.", timeout=30_000)
    # the router is down in this test: a sentence, not a trace
    page.wait_for_selector("text=The router is not available", timeout=30_000)
    no_errors(page)
