"""The Streamlit view in a real headless Chromium: pages render, charts draw, admin sign-in works,
and what people reported unreadable is readable: every policy in the summary without an inner
scroll, no table or chart cut on the right, every column named, a distinct colour per policy (the
same in every chart), steps instead of diagonals, the router's active policy in the switcher."""
from __future__ import annotations

import re

import pytest

from tests.browser.conftest import ADMIN_SECRET, HISTORY_TASKS, LOOP_POLICIES, POLICIES, ROUTER_POLICY, screenshot

pytestmark = pytest.mark.browser


HEADINGS = {"Compare": "Compare policies", "Submit": "Submit a task", "Admin": "Admin", "Metrics": "Router metrics",
            "Capacity": "Capacity", "Loop": "Learning loop"}

#: per st.table: its column headings, the first cell of each row, and any clipping or inner scrolling
TABLES_JS = """() => [...document.querySelectorAll('[data-testid=stTable]')].map(t => {
  const boxes = [t, ...t.querySelectorAll('*')];
  return {
    heads: [...t.querySelectorAll('thead th')].map(h => h.innerText.trim()),
    first: [...t.querySelectorAll('tbody tr')].map(r => r.cells[0].innerText.trim()),
    wide: boxes.filter(e => e.scrollWidth > e.clientWidth + 1 && e.clientWidth > 0).length,
    tall: boxes.filter(e => e.scrollHeight > e.clientHeight + 1 && e.clientHeight > 0
                         && getComputedStyle(e).overflowY !== 'visible').length,
    table: t.querySelector('table').getBoundingClientRect().width, box: t.clientWidth,
  };
})"""
#: per chart: legend labels with their symbol colours, its size against its box, and its line marks
CHARTS_JS = """() => [...document.querySelectorAll('.vega-embed')].map(e => {
  const colour = p => { const f = p.getAttribute('fill'), s = p.getAttribute('stroke');
                        return (f && f !== 'transparent' && f !== 'none') ? f : s; };
  return {
    labels: [...e.querySelectorAll('.role-legend-label text')].map(x => x.textContent),
    colours: [...e.querySelectorAll('.role-legend-symbol path')].map(colour),
    wide: e.scrollWidth > e.clientWidth + 1,
    svg: e.querySelector('svg') ? e.querySelector('svg').getBoundingClientRect().width : 0, box: e.clientWidth,
    lines: [...e.querySelectorAll('.mark-line path')].map(p => p.getAttribute('d') || ''),
  };
})"""


def go(page, name: str) -> None:
    # as long as the page's own first load may take (conftest): under a loaded 2-core CI the link
    # once took more than the 30 s default to appear
    page.get_by_text(name, exact=True).first.click(timeout=60_000)
    page.wait_for_selector(f"h2:has-text('{HEADINGS[name]}')", timeout=30_000)


def point_at(page, router: str) -> None:
    """Type ``router`` as the sidebar's router URL (the page reruns against it)."""
    url = page.get_by_label("Router URL")
    url.fill(router)
    url.press("Enter")


def no_errors(page) -> None:
    body = page.inner_text("body")
    assert "Traceback" not in body
    assert "Something went wrong" not in body
    assert page.locator("[data-testid='stException']").count() == 0


def tables_fit(page) -> list[dict]:
    """Every st.table on the page, asserted uncut: no inner scroll either way, every column named."""
    tables = page.evaluate(TABLES_JS)
    assert tables
    for t in tables:
        assert t["wide"] == 0 and t["table"] <= t["box"] + 1, t  # nothing cut on the right
        assert t["tall"] == 0, t  # every row laid out in the page
        assert all(h and not re.fullmatch(r"[\d.\s-]*", h) for h in t["heads"]), t["heads"]  # named columns
    return tables


def step_segments_only(d: str) -> bool:
    """True when an SVG path (M/L commands, as Vega writes a line) has no diagonal segment."""
    pts = [(float(x), float(y)) for x, y in re.findall(r"(-?[\d.]+(?:e-?\d+)?),(-?[\d.]+(?:e-?\d+)?)", d)]
    return all(abs(x1 - x0) < 0.01 or abs(y1 - y0) < 0.01 for (x0, y0), (x1, y1) in zip(pts, pts[1:]))


def test_compare_draws_its_charts_from_a_small_result_set(page) -> None:
    go(page, "Compare")
    page.wait_for_selector("text=Latency distribution (CDF)", timeout=30_000)
    page.wait_for_selector(".vega-embed", timeout=30_000)
    no_errors(page)
    # CDF, SLO by priority, cost, placement mix, utilisation, GPU allocation, fragmentation
    page.wait_for_function("document.querySelectorAll('.vega-embed').length >= 7", timeout=30_000)
    body = page.inner_text("body")
    for policy in POLICIES:
        assert policy in body
    assert page.get_by_text("Download summary (CSV)").count() == 1


def test_compare_is_readable_with_thirteen_policies(page, result_root) -> None:
    go(page, "Compare")
    # Streamlit sends a run's elements as they are made: wait for the last chart's legend and the
    # page's last button before reading it (five legends of 13 policies, one of the 4 pools)
    page.wait_for_function("document.querySelectorAll('.vega-embed .role-legend-symbol').length >= "
                           f"{5 * len(POLICIES) + 4}", timeout=60_000)
    page.wait_for_selector("text=Download timeline (CSV)", timeout=30_000)
    packing = (result_root / "packing").is_dir()  # written when the shared traces are present
    if packing:
        page.wait_for_selector("text=Download packing (CSV)", timeout=30_000)
    page.wait_for_timeout(500)
    no_errors(page)
    tables = tables_fit(page)
    summary = tables[0]
    assert summary["first"] == POLICIES  # every policy a row of the page, none behind an inner scroll
    assert "policy" in summary["heads"] and "p99 (ms)" in summary["heads"]
    for name in POLICIES:
        cell = page.locator("[data-testid=stTable]").first.get_by_role("cell", name=name, exact=True)
        assert cell.is_visible()
    if packing:
        assert any("seed 42" in t["heads"] for t in tables)  # not a bare "42"
    charts = page.evaluate(CHARTS_JS)
    colours: dict[str, str] = {}
    by_policy = [c for c in charts if c["labels"] and set(c["labels"]) <= set(POLICIES)]
    assert len(by_policy) >= 5, [c["labels"] for c in charts]  # CDF, SLO, utilisation, GPU alloc, fragmentation
    for c in by_policy:
        assert c["labels"] == POLICIES and len(c["colours"]) == len(POLICIES)
        assert len(set(c["colours"])) == len(POLICIES), c["colours"]  # a colour of its own per policy
        for label, colour in zip(c["labels"], c["colours"]):
            assert colours.setdefault(label, colour) == colour, label  # the same colour in every chart
    for c in charts:
        assert not c["wide"] and c["svg"] <= c["box"] + 1, c  # no chart cut on the right
        assert all(step_segments_only(d) for d in c["lines"])  # steps, no interpolated diagonals
    assert sum(len(c["lines"]) for c in charts) >= 4 * len(POLICIES)
    screenshot(page, "compare")


def test_submit_with_the_router_down_says_so(page) -> None:
    go(page, "Submit")
    page.get_by_role("button", name="Submit").click()
    page.wait_for_selector("text=is not answering", timeout=30_000)
    no_errors(page)
    screenshot(page, "submit")


def test_submit_sends_the_api_key_typed_in_the_sidebar(page, keyed_router) -> None:
    """Without a key the router refuses and the page says where to type one; with the key typed in
    the sidebar the same request is placed. The key is never shown."""
    url, secret = keyed_router
    box = page.get_by_label("Router URL")
    box.fill(url)
    box.press("Enter")
    go(page, "Submit")
    page.get_by_text("Run it on the cluster (otherwise only decide where)").click()  # decide only
    page.get_by_role("button", name="Submit").click()
    page.wait_for_selector("text=Type your API key in the sidebar", timeout=30_000)
    key = page.get_by_role("textbox", name="API key")
    key.fill(secret)
    key.press("Enter")
    page.get_by_role("button", name="Submit").click()
    page.wait_for_selector("text=Placed on", timeout=30_000)
    no_errors(page)
    assert secret not in page.inner_text("body")
    assert key.get_attribute("type") == "password"


def sign_in(page) -> None:
    go(page, "Admin")
    page.get_by_label("Admin secret").fill(ADMIN_SECRET)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_selector("text=Signed in.", timeout=30_000)


def test_admin_refuses_a_wrong_secret_and_accepts_the_right_one(page) -> None:
    go(page, "Admin")
    page.wait_for_selector("text=ORCH_ADMIN_TOKEN", timeout=30_000)  # where the secret comes from
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


def switcher_value(page) -> str:
    return page.get_by_role("combobox", name="Switch to").input_value()


def test_admin_against_a_live_router(page, live_router: str) -> None:
    sign_in(page)
    url = page.get_by_label("Router URL")
    url.fill(live_router)
    url.press("Enter")
    page.wait_for_selector("text=Node health", timeout=30_000)
    # the whole history, not its newest 200 (the last thing the page writes: the run is complete)
    page.wait_for_selector(f"text=Covers all {HISTORY_TASKS} tasks in the router's history", timeout=30_000)
    page.wait_for_selector("text=Download cost_by_pool_policy (CSV)", timeout=30_000)
    no_errors(page)
    body = page.inner_text("body")
    assert f"In use: {ROUTER_POLICY}" in body
    assert switcher_value(page) == ROUTER_POLICY  # not the first of the alphabetical list
    assert "read from the environment variable ORCH_ADMIN_TOKEN" in body and ADMIN_SECRET not in body
    # links only to what answers: Prometheus (the fake) does, Grafana and the Ray dashboard do not
    links = page.evaluate("[...document.querySelectorAll('a')].map(a => a.textContent)")
    assert "Prometheus" in links and "Grafana" not in links and "Ray dashboard" not in links
    assert "Not answering: Ray dashboard" in body
    tables = tables_fit(page)  # per-pool health, nodes, cost: nothing cut on the right
    assert any("node" in t["heads"] and "problem" in t["heads"] for t in tables)
    cost = next(t for t in tables if "cost total ($)" in t["heads"])
    assert set(cost["first"]) == {"edge", "cloud", "gpu-mig", "gpu-ts"}
    screenshot(page, "admin")
    page.get_by_role("combobox", name="Switch to").click()
    page.get_by_role("option", name="least-loaded", exact=True).click()
    page.get_by_role("button", name="Switch").click()
    page.wait_for_selector("text=Now using least-loaded.", timeout=30_000)
    page.wait_for_selector("text=In use: least-loaded", timeout=30_000)
    assert switcher_value(page) == "least-loaded"
    no_errors(page)


def test_metrics_draws_the_router_series_from_prometheus(page, prometheus) -> None:
    go(page, "Metrics")
    for title in ("Decisions per second", "Decision latency", "Placements per pool", "SLO misses"):
        page.wait_for_selector(f"h3:has-text('{title}')", timeout=30_000)
    # legends: 2 policies, p50 and p99, 3 pools, 2 priorities (the fake's series)
    page.wait_for_function("document.querySelectorAll('.vega-embed .role-legend-symbol').length >= 9",
                           timeout=30_000)
    no_errors(page)
    charts = page.evaluate(CHARTS_JS)
    assert any(c["labels"] == ["p50", "p99"] for c in charts)
    assert any(set(c["labels"]) == {"edge", "cloud", "gpu-mig"} for c in charts)
    asked = " ".join(q["query"] for q in prometheus.queries)
    assert "ray_orch_decision_latency_seconds_bucket" in asked and "ray_orch_decisions_total" in asked
    screenshot(page, "metrics")


#: what each page that reads the router says while it is down
ROUTER_DOWN = {"Capacity": ["No forecast: the router at", "No recommendation: the router at"],
               "Loop": ["No learning loop to show: the router at"]}


@pytest.mark.parametrize("name", list(ROUTER_DOWN))
def test_with_the_router_down_the_page_says_so(page, name: str) -> None:
    go(page, name)
    for sentence in ROUTER_DOWN[name]:
        page.wait_for_selector(f"text={sentence}", timeout=30_000)
    no_errors(page)


def test_capacity_draws_the_forecast_against_actuals_and_the_recommendation(page, capacity_router: str) -> None:
    go(page, "Capacity")
    point_at(page, capacity_router)
    # four days of hours: the forecast, its backtest against what arrived, and the errors of both models
    page.wait_for_selector("text=Backtest: each model forecast the last 24 whole intervals", timeout=90_000)
    page.wait_for_selector("text=Suggested MIG layouts", timeout=30_000)
    # Streamlit and Vega fill some elements in after the text around them: wait for each one read below
    page.wait_for_function("document.body.innerText.includes('--- local (now)')", timeout=30_000)  # the diff
    labels = "[...document.querySelectorAll('[data-testid=stMetricLabel]')].map(e => e.textContent.trim())"
    page.wait_for_function(f"{labels}.includes('Recommended ($/h)')", timeout=30_000)
    page.wait_for_function("[...document.querySelectorAll('.vega-embed .role-legend-label text')]"
                           ".map(x => x.textContent).join(',').includes('actual,backtest,forecast')", timeout=30_000)
    no_errors(page)
    assert {"Cost now ($/h)", "Recommended ($/h)", "SLO misses, recommended"} <= set(page.evaluate(labels))
    tables = tables_fit(page)
    errors = next(t for t in tables if "MASE" in t["heads"])
    assert set(errors["first"]) == {"snaive", "ets"} and "95% coverage" in errors["heads"]
    assert any(t["first"][:2] == ["now", "recommended"] for t in tables)
    chart = next(c for c in page.evaluate(CHARTS_JS) if c["labels"] == ["actual", "backtest", "forecast"])
    assert not chart["wide"] and chart["svg"] <= chart["box"] + 1
    assert len(chart["lines"]) == 3 and all(step_segments_only(d) for d in chart["lines"])
    screenshot(page, "capacity")


def test_loop_shows_calibration_shadow_replay_and_promotions(page, loop_router: str) -> None:
    go(page, "Loop")
    point_at(page, loop_router)
    page.wait_for_selector("h3:has-text('Promotions and rollbacks')", timeout=30_000)
    page.wait_for_selector("text=least-loaded is being judged against fastest-feasible", timeout=30_000)
    page.wait_for_selector("text=Download counterfactual (CSV)", timeout=30_000)
    # the promotion log is the page's last element and Streamlit may draw it after the warning above it
    page.wait_for_selector("[data-testid=stTable] thead th:has-text('baseline miss rate %')", timeout=30_000)
    # the calibration bars (measured, model before, after) and the counterfactual's intervals
    page.wait_for_function("document.querySelectorAll('.vega-embed').length >= 2", timeout=30_000)
    page.wait_for_function("[...document.querySelectorAll('.vega-embed .role-legend-label text')]"
                           ".map(x => x.textContent).join(',') === 'measured,model before,model after'",
                           timeout=30_000)
    no_errors(page)
    body = page.inner_text("body")
    assert "No retrain report in" in body and "orchestrator retrain" in body  # the part not written: a sentence
    assert "random is worse than fastest-feasible task by task" in body
    assert "Champion (acts): least-loaded · challenger (in shadow): fastest-feasible" in body  # promoted
    tables = tables_fit(page)
    by_class = next(t for t in tables if "error after %" in t["heads"])
    assert set(by_class["first"]) == {"edge", "cloud", "gpu-mig"}
    shadow = next(t for t in tables if "agreement %" in t["heads"])
    assert shadow["first"] == ["rf:5"]
    replay = next(t for t in tables if "vs champion" in t["heads"])
    assert replay["first"] == LOOP_POLICIES
    log = next(t for t in tables if "baseline miss rate %" in t["heads"])
    assert len(log["first"]) == 1
    charts = page.evaluate(CHARTS_JS)
    assert all(not c["wide"] and c["svg"] <= c["box"] + 1 for c in charts)  # no chart cut on the right
    screenshot(page, "loop")
