"""The control room and inspector pages in a real browser: Debian's Chromium, headless, driven
by Playwright, against the real app (uvicorn, lifespan) on the real database.

Screenshots are saved under test-artifacts/browser/ (CI keeps them); the README shows copies.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from alerting.engine import ConditionEvent, EventKind
from alerting.pack import Priority, Severity, default_pack_path, load_pack
from alerting.store import AlertStore, to_us
from ingest.batch import Batch
from ingest.store import ReadingStore
from simulator.fleet import load_scenario_fleet
from simulator.scenario import scenario
from tests.fix_api import PASSWORD, Api, in_thread
from tests.fix_broker import Broker
from tests.fix_ingest import IngestProcess, co_detector_site, register

PACK = load_pack(default_pack_path())
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "browser"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Headless Debian Chromium, without background networking (this machine has no internet)."""
    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--disable-dev-shm-usage",
            ],
        )
        yield b
        b.close()


@pytest.fixture
def pages() -> Iterator[list[Page]]:
    """Pages a test opened, closed when it ends (before its API and schema go)."""
    opened: list[Page] = []
    yield opened
    for p in opened:
        p.context.close()


def login(browser: Browser, api: Api, username: str, pages: list[Page]) -> Page:
    page = browser.new_context(
        viewport={"width": 1400, "height": 1000}, accept_downloads=True
    ).new_page()
    pages.append(page)
    page.goto(f"{api.url}/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    page.click("#login button[type=submit]")
    expect(page.locator("#who")).to_contain_text(username)
    return page


def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def apply(api: Api, *events: ConditionEvent) -> None:
    async def run() -> None:
        store = AlertStore(database_url=api.database_url, schema=api.schema)
        try:
            await store.apply(list(events), pack=PACK, scope="*", state=b"x")
            await store.register_pack(PACK, default_pack_path().read_text("utf-8"))
        finally:
            await store.close()

    in_thread(run)


def co(t: datetime, kind: EventKind, value: float) -> ConditionEvent:
    if kind is EventKind.CLEAR:
        return ConditionEvent(
            to_us(t),
            "s1",
            "bay",
            "gas.co.level",
            "bay.co",
            "CO in the work area",
            kind,
            value=value,
            reason="returned to normal",
        )
    return ConditionEvent(
        to_us(t),
        "s1",
        "bay",
        "gas.co.level",
        "bay.co",
        "CO in the work area",
        kind,
        severity=Severity.CRITICAL,
        priority=Priority.HIGH,
        latch=False,
        value=value,
        limit=200.0,
        reason=f"value {value:g} above the critical limit 200",
    )


def write_readings(api: Api, start: datetime, seconds: int) -> None:
    async def run(conn: Any) -> None:
        cur = await conn.execute("SELECT key FROM sensors WHERE id = 'bay.co'")
        key = int((await cur.fetchone())[0])
        t = to_us(start) + np.arange(seconds, dtype=np.int64) * 1_000_000
        v = 4.0 + np.sin(np.arange(seconds) / 120.0) * 2
        v[seconds // 2 : seconds // 2 + 300] = 260.0
        store = ReadingStore(database_url=api.database_url, schema=api.schema)
        try:
            await store.commit_batch(
                Batch(
                    started_mono_s=0.0,
                    sensor_keys=[key] * seconds,
                    ts_us=t.tolist(),
                    values=v.tolist(),
                    qualities=[0] * seconds,
                )
            )
        finally:
            await store.close()

    api.db(run)


@pytest.fixture
def plant(api: Api) -> Api:
    """Facility s1 with one CO detector, an operator pair and an inspector."""
    register(api.database_url, api.schema, co_detector_site("s1", period_s=1.0))
    admin = api.user("admin", "admin")
    assert (
        admin.post(
            "/api/v1/facilities",
            json={"site_id": "s1", "name": "Smelter line 1", "company": "PT Contoh"},
        ).status_code
        == 201
    )
    for name, role in (("op1", "operator"), ("op2", "operator"), ("insp1", "inspector")):
        api.user(name, role, ("s1",))
    return api


def test_an_alert_appears_live_and_an_ack_reaches_every_operator(
    browser: Browser, plant: Api, pages: list[Page]
) -> None:
    """Two operators watch; the engine raises a critical CO alert; it appears on both pages;
    one acknowledges it and the other sees the new state; a network drop loses nothing."""
    a, b = login(browser, plant, "op1", pages), login(browser, plant, "op2", pages)
    for p in (a, b):
        expect(p.locator("#live")).to_have_text("live")
        expect(p.locator("#no-alarms")).to_be_visible()
    now = datetime.now(UTC)
    apply(plant, co(now, EventKind.ACTIVATE, 260.0))
    committed = time.monotonic()
    row_a = a.locator("#alarms tr[data-alert]")
    expect(row_a).to_have_count(1, timeout=5000)
    seen = time.monotonic()
    print(f"alert on the page {1000 * (seen - committed):.0f} ms after commit")  # noqa: T201
    expect(row_a.locator(".state")).to_have_text("Unacknowledged")
    expect(row_a.locator(".prio")).to_have_text("high")
    expect(b.locator("#alarms tr[data-alert] .state")).to_have_text("Unacknowledged")
    shot(a, "control-room-alert")
    row_a.get_by_role("button", name="Ack").click()
    expect(b.locator("#alarms tr[data-alert] .state")).to_have_text("Acknowledged")
    expect(b.locator("#events li").first).to_contain_text("by op1")
    # b's network drops; meanwhile the condition clears; back online, b catches up.
    # (Going offline blocks new requests; the open stream is cut by hand, as a dropped TCP
    # connection would cut it.)
    b.context.set_offline(True)
    b.evaluate("state.stream.abort()")
    expect(b.locator("#live")).to_have_text("reconnecting", timeout=10_000)
    apply(plant, co(now + timedelta(seconds=30), EventKind.CLEAR, 3.0))
    expect(a.locator("#no-alarms")).to_be_visible()
    b.context.set_offline(False)
    expect(b.locator("#live")).to_have_text("live", timeout=15_000)
    expect(b.locator("#no-alarms")).to_be_visible()
    expect(b.locator("#events li").first).to_contain_text("clear")
    # Raised again, then shelved from a's page (reason and minutes asked): on b it leaves the
    # alarm list for the shelved list, with its reason, and can be unshelved there.
    apply(plant, co(now + timedelta(seconds=60), EventKind.ACTIVATE, 270.0))
    expect(a.locator("#alarms tr[data-alert]")).to_have_count(1)
    answers = iter(["sensor swap", "30"])
    a.on("dialog", lambda d: d.accept(next(answers)))
    a.locator("#alarms tr[data-alert]").get_by_role("button", name="Shelve").click()
    shelved = b.locator("#others tr[data-alert]")
    expect(shelved).to_have_count(1)
    expect(shelved.locator(".state")).to_have_text("Shelved")
    expect(shelved).to_contain_text("sensor swap")
    expect(b.locator("#no-alarms")).to_be_visible()
    shelved.get_by_role("button", name="Unshelve").click()
    expect(a.locator("#alarms tr[data-alert]")).to_have_count(1)
    shot(b, "control-room-after")


def test_flood_banner_and_state_in_words(browser: Browser, plant: Api, pages: list[Page]) -> None:
    """Eleven alarms in ten minutes raise the flood banner, which says so in words."""
    page = login(browser, plant, "op1", pages)
    expect(page.locator("#live")).to_have_text("live")
    now = datetime.now(UTC)
    events = [
        ConditionEvent(
            to_us(now + timedelta(seconds=i)),
            "s1",
            "bay",
            f"gas.test{i}",
            "bay.co",
            "CO",
            EventKind.ACTIVATE,
            severity=Severity.WARNING,
            priority=Priority.MEDIUM,
            value=30.0,
            limit=25.0,
            reason="above",
        )
        for i in range(11)
    ]
    apply(plant, *events)
    expect(page.locator("#flood")).to_contain_text("ALARM FLOOD: 11 alarms")
    expect(page.locator("#alarms tr[data-alert]")).to_have_count(11)
    shot(page, "control-room-flood")
    # On a wall screen the same page is drawn larger; on a laptop it stays compact.
    size = "return parseFloat(getComputedStyle(document.body).fontSize)"
    assert page.evaluate(f"() => {{ {size} }}") == 16
    page.set_viewport_size({"width": 1920, "height": 1080})
    assert page.evaluate(f"() => {{ {size} }}") == 22
    expect(page.locator("#flood")).to_be_visible()
    shot(page, "control-room-wall")


def test_inspector_sees_the_record_the_timeline_and_exports(
    browser: Browser, plant: Api, pages: list[Page]
) -> None:
    """The record and its status, the timeline chart drawn with the alert, and a PDF export."""
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=1)
    write_readings(plant, start, 3600)
    apply(
        plant,
        co(start + timedelta(minutes=30), EventKind.ACTIVATE, 260.0),
        co(start + timedelta(minutes=35), EventKind.CLEAR, 3.0),
    )
    page = login(browser, plant, "insp1", pages)
    page.click("button[data-view=inspect]")
    # The critical alert half an hour ago was never acknowledged: beyond the 15-min SLA.
    expect(page.locator("#status-word")).to_have_text("non compliant")
    expect(page.locator("#status-reasons")).to_contain_text("unacknowledged for more than 900 s")
    expect(page.locator("#status-reasons")).to_contain_text("no SMK3 certificate on record")
    expect(page.locator("#identity")).to_contain_text("Smelter line 1")
    chart = page.locator(".chart[data-group='bay · area_co'] canvas")
    expect(chart).to_have_count(1, timeout=10_000)
    assert chart.bounding_box()["width"] > 300  # type: ignore[index]
    expect(page.locator("#journal")).to_contain_text("activate")
    expect(page.locator(".chart[data-group='bay · area_co']")).to_contain_text(
        "gas.co.level critical 200"
    )
    shot(page, "inspector-timeline")
    with page.expect_download(timeout=60_000) as dl:
        page.click("a.export[data-format=pdf]")
    path = dl.value.path()
    assert path is not None
    assert Path(path).read_bytes()[:5] == b"%PDF-"
    assert dl.value.suggested_filename.startswith("tungku-s1-")


@pytest.mark.slow
def test_a_simulated_scenario_raises_alerts_that_appear_live(
    browser: Browser,
    api: Api,
    pages: list[Page],
    broker: Broker,
    ingest_factory: Callable[..., IngestProcess],
) -> None:
    """The whole pipeline: the simulator plays the positive-pressure incident through the
    broker into the ingest service, whose engine raises the alerts; an operator watching the
    page sees the freeboard-pressure critical appear without reloading, and acknowledges it."""
    sc = scenario("positive-pressure")
    for site in load_scenario_fleet().sites():
        register(api.database_url, api.schema, site)
    api.user("op1", "operator", (sc.site,))
    svc = ingest_factory(mqtt_port=broker.port, sites=[sc.site])
    svc.start()
    page = login(browser, api, "op1", pages)
    expect(page.locator("#live")).to_have_text("live")
    expect(page.locator("#no-alarms")).to_be_visible()
    start_ms = int(time.time() * 1000) - sc.duration_s * 1000 - 60_000
    sim = subprocess.run(
        [
            sys.executable,
            "-m",
            "ingest.cli",
            "simulate",
            "--port",
            str(broker.port),
            "--scenario",
            sc.name,
            "--seed",
            "20231224",
            "--start-ms",
            str(start_ms),
            "--no-permits",
            "--speed",
            "100000",
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert sim.returncode == 0, sim.stdout + sim.stderr
    row = page.locator("#alarms tr[data-alert]", has_text="freeboard.pressure")
    expect(row).to_have_count(1, timeout=60_000)
    expect(row.locator(".prio")).to_have_text("high")
    expect(page.locator("#alarms tr[data-alert]", has_text="gas.co.level").first).to_be_visible()
    shot(page, "control-room-scenario")
    row.get_by_role("button", name="Ack").click()
    expect(page.locator("#events li", has_text="acknowledge").first).to_contain_text("by op1")
    expect(row.get_by_role("button", name="Ack")).to_have_count(0)
