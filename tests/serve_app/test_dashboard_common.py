"""The view's router client: which router and key a page talks to."""
from __future__ import annotations

from types import SimpleNamespace

from serve_app import dashboard_common
from serve_app.client import DEFAULT_URL


def _client(monkeypatch, **state):
    monkeypatch.setattr(dashboard_common, "st", SimpleNamespace(session_state=state))
    return dashboard_common.client()


def test_an_empty_router_box_means_the_views_default_router(monkeypatch) -> None:
    # a page once sent the sidebar's box empty (a rerun on a loaded CI machine): the Submit page then
    # said "the router at  is not answering" about a router that was up
    for empty in ("", "   ", None):
        assert _client(monkeypatch, router_url=empty).url == DEFAULT_URL.rstrip("/")
    assert _client(monkeypatch).url == DEFAULT_URL.rstrip("/")
    assert _client(monkeypatch, router_url=" http://10.0.0.5:8000/ ").url == "http://10.0.0.5:8000"


def test_the_sidebars_key_is_sent_and_an_empty_one_falls_back_to_the_views_own(monkeypatch) -> None:
    monkeypatch.setenv("ORCH_API_KEY", "view-key")
    assert _client(monkeypatch, api_key="typed").api_key == "typed"
    assert _client(monkeypatch, api_key="  ").api_key == "view-key"
