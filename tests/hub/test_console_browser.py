"""The web console end to end in headless Chromium (Debian's ``chromium`` driven by Playwright).

A real hub (uvicorn) holds a small fleet created through the REST API (``seed``); the browser signs
in, walks every page (the Cluster page over records made by ``seed_cluster``) and signs out, taking
screenshots into the test's tmp dir. The devices and cluster page screenshots are also copied to
``docs/console-devices.png`` and ``docs/console-cluster.png`` when those files are missing or
``ROOST_UPDATE_SCREENSHOTS=1`` (so ordinary runs leave the working tree alone).

Skipped when Chromium or Playwright is missing, unless ``ROOST_REQUIRE_SERVICES=1``.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, require_service
from tests.hub.conftest import HubServer
from tests.hub.test_console import seed
from tests.hub.test_console_cluster import XSS_LABEL, replica_status_server, seed_cluster

CHROMIUM = Path(os.environ.get("ROOST_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]
DOCS_SCREENSHOT = REPO / "docs" / "console-devices.png"
DOCS_CLUSTER_SCREENSHOT = REPO / "docs" / "console-cluster.png"
DOCS_DEVICE_SCREENSHOT = REPO / "docs" / "console-device.png"


def seed_metrics(store: Any, device: str, minutes: int = 45) -> None:
    """An hour's worth of a device's metrics snapshots, recorded by the real store at past minutes (the
    store's clock is moved back for each; the API would stamp them all "now")."""
    from sqlalchemy import select

    from roost.hub.contract.metrics import MetricsSnapshot, ModelSample
    from roost.hub.models import Device

    with store.db.read() as s:
        device_id = s.scalar(select(Device.id).where(Device.name == device))
    clock = store.clock
    now = clock()
    try:
        for i in range(minutes):
            at = now - timedelta(minutes=minutes - i)
            store.clock = lambda at=at: at
            wave = (i % 12) / 12
            store.record_snapshot(device_id, MetricsSnapshot(
                at=at, values={"cpu_ratio": 0.15 + 0.5 * wave, "memory_ratio": 0.42 + 0.05 * wave},
                models={"wine-seed": ModelSample(requests_total=120.0 * i, latency_p50_seconds=0.0009,
                                                       latency_p95_seconds=0.0012 + 0.002 * wave)}))
    finally:
        store.clock = clock


@pytest.fixture
def chromium() -> Iterator[Any]:
    """A headless Chromium browser (Playwright's sync API)."""
    has_playwright = importlib.util.find_spec("playwright") is not None
    require_service("Chromium", CHROMIUM.exists() and has_playwright,
                    f"{CHROMIUM} is missing (apt-get install chromium)" if not CHROMIUM.exists()
                    else "the playwright package is not installed (pip install -e '.[dev]')")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def test_console_in_chromium(hub_server: HubServer, chromium: Any, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    fleet = seed(hub_server)
    context = chromium.new_context(viewport={"width": 1280, "height": 760}, base_url=hub_server.url)
    page = context.new_page()
    page.set_default_timeout(15_000)
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    console_errors: list[str] = []
    page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)

    def keep_shot(png: Path, docs: Path) -> None:
        if not docs.exists() or os.environ.get("ROOST_UPDATE_SCREENSHOTS") == "1":
            shutil.copyfile(png, docs)

    def shot(name: str) -> Path:
        path = tmp_path / f"console-{name}.png"
        page.screenshot(path=str(path), full_page=True)
        assert path.stat().st_size > 5_000
        return path

    # A page without a session sends the browser to the sign-in form.
    page.goto("/console/deployments")
    expect(page).to_have_url(f"{hub_server.url}/console/login?next=%2Fconsole%2Fdeployments")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()

    # A wrong token: an error, still on the form, no session cookie.
    page.get_by_label("API token").fill("rst_admin_not-a-real-token")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("was not accepted")
    assert not [c for c in context.cookies() if c["name"] == "roost_console"]
    shot("signin-error")

    # The admin token: back to the page asked for first, then the devices with their labels.
    page.get_by_label("API token").fill(hub_server.token)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(f"{hub_server.url}/console/deployments")
    cookie = next(c for c in context.cookies() if c["name"] == "roost_console")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and hub_server.token not in cookie["value"]

    page.get_by_role("link", name="Devices").click()
    expect(page).to_have_url(f"{hub_server.url}/console/devices")
    rows = page.locator("#devices tbody tr")
    expect(rows).to_have_count(4)
    row = rows.filter(has_text="edge-01")
    expect(row).to_contain_text("machine=xavier")
    expect(row).to_contain_text("ONLINE")
    expect(row).to_contain_text("line-a")
    expect(rows.filter(has_text="edge-03")).to_contain_text("note=<script>alert('x')</script>")  # shown as text
    expect(rows.filter(has_text="edge-04")).to_contain_text("REVOKED")
    keep_shot(shot("devices"), DOCS_SCREENSHOT)

    fleet_bar = page.locator("#fleet-status svg")
    expect(fleet_bar).to_have_attribute("aria-label", "3 ONLINE, 1 REVOKED")

    # A device: its charts of the last hour, its component states and its deployments.
    seed_metrics(hub_server.store, "edge-02")
    page.get_by_role("link", name="edge-02", exact=True).click()
    charts = page.locator("#charts svg")
    expect(charts).to_have_count(3)
    expect(charts.nth(0)).to_have_attribute("aria-label", re.compile(r"^CPU: last [0-9.]+ %, peak 60.8 %, 45 samples"))
    expect(charts.nth(2)).to_have_attribute("aria-label", re.compile(r"^wine-seed latency p95: last"))
    line = charts.nth(0).locator("polyline").bounding_box()
    assert line is not None and line["width"] > 150  # drawn across most of the hour, at the page's size
    expect(page.get_by_role("heading", name="edge-02")).to_be_visible()
    sensor = page.locator("#components tbody tr").filter(has_text="com.example.Sensor")
    expect(sensor).to_contain_text("BROKEN")
    expect(page.locator("#components tbody tr").filter(has_text="com.example.WineQuality")).to_contain_text("RUNNING")
    expect(page.locator("#deployments tbody tr").first).to_contain_text("COMPONENT_BROKEN")
    keep_shot(shot("device"), DOCS_DEVICE_SCREENSHOT)

    # Deployments: list, then one with per-device status.
    page.get_by_role("link", name="Deployments").click()
    expect(page.locator("#deployments tbody tr")).to_have_count(2)
    shot("deployments")
    page.get_by_role("link", name=fleet.deployment_id[:8]).click()
    expect(page).to_have_url(f"{hub_server.url}/console/deployments/{fleet.deployment_id}")
    status = page.locator("#device-status tbody tr")
    expect(status.filter(has_text="edge-01")).to_contain_text("SUCCEEDED")
    expect(status.filter(has_text="edge-02")).to_contain_text("FAILED")
    expect(status.filter(has_text="edge-03")).to_contain_text("QUEUED")
    bar = page.locator(".card .bar")
    expect(bar).to_have_attribute("aria-label", "2 of 3 devices finished: 1 succeeded, 1 failed, 1 queued")
    box = bar.locator(".seg.ok").bounding_box()
    assert box is not None and box["width"] > 50  # the CSS sized the segment
    shot("deployment")

    # Components and their versions.
    page.get_by_role("link", name="Components").click()
    wine = page.locator("section.component").filter(has_text="com.example.WineQuality")
    expect(wine.locator("tbody tr")).to_have_count(4)  # two versions x two artifacts
    expect(wine).to_contain_text("1.1.0")
    expect(wine).to_contain_text("1.0.0")
    shot("components")

    # The cluster: nodes by tier with capacity bars, service types, replicas, sessions and the offload counts.
    with replica_status_server() as port:
        made = seed_cluster(hub_server.store, port)
        page.get_by_role("link", name="Cluster").click()
        expect(page).to_have_url(f"{hub_server.url}/console/cluster")
        expect(page.get_by_role("heading", name="Cluster", exact=True)).to_be_visible()
        expect(page.locator("#session-summary")).to_have_text("3 sessions: 2 at the edge, 1 offloaded to the centre")
        expect(page.locator("#nodes-edge tbody tr")).to_have_count(3)
        expect(page.locator("#nodes-centre tbody tr")).to_have_count(1)
        xavier = page.locator("#nodes-edge tbody tr").filter(has_text="xavier-1")
        expect(xavier.locator("td.memory")).to_contain_text("6.5 GiB of 8.0 GiB")
        expect(xavier.locator("td.memory")).to_contain_text("measured 15.5 GiB")
        memory_bar = xavier.locator("td.memory .bar")
        expect(memory_bar).to_have_attribute("aria-label", "memory: 6.5 GiB of 8.0 GiB requested (81 %)")
        whole, filled = memory_bar.bounding_box(), memory_bar.locator(".seg").bounding_box()
        assert whole is not None and filled is not None
        assert 0.78 < filled["width"] / whole["width"] < 0.86  # the CSS sized the bar (w-82)
        nano = page.locator("#nodes-edge tbody tr").filter(has_text="nano-1")
        expect(nano).to_contain_text("OFFLINE")
        expect(nano).to_contain_text(f"note={XSS_LABEL}")  # shown as text
        expect(page.locator("#replicas tbody tr").filter(has_text=made.failed_replica[:8])).to_contain_text("FAILED")
        expect(page.locator("#live-sessions tbody tr").filter(has_text=made.live_centre[:8])).to_contain_text(
            "offloaded")
        expect(page.locator("#ended-sessions tbody tr")).to_have_count(2)
        keep_shot(shot("cluster"), DOCS_CLUSTER_SCREENSHOT)
        page.get_by_role("link", name="xavier-1").first.click()  # a node's name leads to its device page
        expect(page.get_by_role("heading", name="xavier-1")).to_be_visible()
        page.set_viewport_size({"width": 390, "height": 800})
        page.get_by_role("link", name="Cluster").click()
        expect(page.locator("#replicas thead")).to_be_hidden()
        shot("cluster-mobile")
        page.set_viewport_size({"width": 1280, "height": 760})

    # Narrow screens get stacked rows.
    page.set_viewport_size({"width": 390, "height": 800})
    page.get_by_role("link", name="Devices").click()
    expect(page.locator("#devices thead")).to_be_hidden()
    shot("devices-mobile")
    page.set_viewport_size({"width": 1280, "height": 760})

    # Sign out: back to the form; pages redirect again.
    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(f"{hub_server.url}/console/login?signed_out=1")
    expect(page.get_by_role("status")).to_contain_text("signed out")
    page.goto("/console/devices")
    expect(page).to_have_url(f"{hub_server.url}/console/login")

    assert dialogs == []  # no injected script ever ran
    # No CSP violation or missing resource (the refused sign-in answers 401 on purpose).
    assert [e for e in console_errors if "status of 401" not in e] == [], console_errors
    context.close()
