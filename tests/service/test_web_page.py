"""The web page at ``/`` in a real browser: Debian's Chromium driven by Playwright, against a real stack.

The stack is the service tests' own (uvicorn, a Celery restore worker, Redis, weed S3); its worker
runs the library pipeline around an engine double (``tests/service/pipeline_doubles.py``), so the
job's report is a real one (per-frame identity distances) and a few frames take seconds. The
browser gets nothing from outside the loopback: any other request fails the test. Chromium is
Debian's package (``scripts/test.sh`` installs it); Playwright downloads nothing.

The page is driven as a person would: errors first (no key, a wrong key), then a video and a photo
submitted with options, live progress, the before/after player, the identity plot and the summary;
another tenant's key then sees no job. A screenshot of the finished job goes to the test artifacts
(``IPFVR_TEST_ARTIFACTS``, default ``out/test-artifacts``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser, Page, Route, expect, sync_playwright

from tests.media_factory import first_frames
from tests.service.stack import REPO, ServiceStack

CHROMIUM = Path("/usr/bin/chromium")
# Headless, and nothing that reaches out (the network is closed anyway): updates, sync, QUIC, first-run pages.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PIPELINE_DOUBLE = "tests.service.pipeline_doubles:load_pipeline_with_engine_double"
FRAMES = 12  # frames of carphone (a face track needs at least 5)
ARTIFACTS = Path(os.environ.get("IPFVR_TEST_ARTIFACTS", REPO / "out" / "test-artifacts"))
JOB_TIMEOUT_MS = 90_000


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert CHROMIUM.is_file(), f"{CHROMIUM} is missing: apt-get install chromium (scripts/test.sh does)"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def loopback_only(page: Page) -> list[str]:
    """Let the page reach 127.0.0.1 only; returns the list of the other URLs it asked for (refused)."""
    refused: list[str] = []

    def handle(route: Route) -> None:
        url = route.request.url
        if urlsplit(url).scheme in ("blob", "data") or urlsplit(url).hostname == "127.0.0.1":
            route.continue_()
        else:
            refused.append(url)
            route.abort()

    page.route("**/*", handle)
    return refused


def use_key(page: Page, key: str) -> None:
    page.fill("#api-key", key)
    page.click("#key-form button[type=submit]")


@pytest.mark.slow
def test_the_page_restores_a_video_and_shows_the_result(
    make_stack,
    browser: Browser,
    tmp_path: Path,  # noqa: ANN001
    carphone_distorted: Path,
    carphone_reference: Path,
) -> None:
    stack: ServiceStack = make_stack(
        restorer=PIPELINE_DOUBLE,
        job_time_limit_s=60,
        job_kill_grace_s=10,
        visibility_timeout_s=120,
        restore_worker=False,
    )
    stack.start_restore_worker("restore")  # loads its models while the page is driven; the job waits for it
    clip = first_frames(carphone_distorted, tmp_path / "carphone.mp4", FRAMES)
    _, key = stack.new_tenant()
    _, other_key = stack.new_tenant()
    page = browser.new_page(viewport={"width": 1280, "height": 860})
    refused = loopback_only(page)
    script_errors: list[str] = []
    page.on("pageerror", lambda error: script_errors.append(str(error)))
    page.goto(f"{stack.url}/")

    # Errors in words: no key, then an unknown one (the API's envelope: message and code).
    page.click("#refresh")
    expect(page.locator("#error")).to_contain_text("enter an API key")
    use_key(page, "ipfvr_not-a-key")
    expect(page.locator("#error")).to_contain_text("[unauthorized]")
    use_key(page, key)
    expect(page.locator("#error")).to_be_hidden()
    expect(page.locator("#jobs-empty")).to_be_visible()

    # Record every status line the page shows while it polls (the job may pass a stage between two polls).
    page.evaluate("""() => {
        window.statusLines = [];
        const node = document.getElementById('job-status');
        new MutationObserver(() => window.statusLines.push(node.textContent))
            .observe(node, {childList: true, characterData: true, subtree: true});
    }""")
    page.set_input_files("#video", str(clip))
    page.set_input_files("#references", str(carphone_reference))
    page.click("#job-form summary")
    page.select_option("#opt-faces", "target")
    page.fill("#opt-seed", "7")
    page.click("#submit")

    expect(page.locator("#job-status")).to_have_attribute(
        "data-status", re.compile("succeeded|failed|canceled"), timeout=JOB_TIMEOUT_MS
    )
    assert page.locator("#job-status").get_attribute("data-status") == "succeeded", page.inner_text("#job-section")
    job_id = page.locator("#job-id").text_content()
    expect(page.locator(f"#jobs tr[data-job='{job_id}']")).to_contain_text("succeeded")
    lines = page.evaluate("window.statusLines")
    assert any(re.search(r"(analyze|restore): frame \d+ of \d+", line) for line in lines), lines

    # The player: the original (this tab's file) and the restored video, both decoded, in step.
    page.wait_for_function("() => ['before', 'after'].every(id => document.getElementById(id).readyState >= 2)")
    expect(page.locator("#compare #before")).to_be_visible()
    expect(page.locator("#compare #after")).to_be_visible()
    expect(page.locator("#before-note")).to_be_hidden()
    page.fill("#seek", "500")
    page.wait_for_function("""() => {
        const [b, a] = ['before', 'after'].map(id => document.getElementById(id));
        return a.currentTime > 0 && Math.abs(a.currentTime - b.currentTime) < 0.05;
    }""")
    href = page.locator("#download").get_attribute("href")
    assert href is not None and "restored.mp4" in href
    # The identity plot from the full report (through the API), and the report's summary.
    with stack.client(key) as client:
        report = client.get(f"/v1/jobs/{job_id}/report").json()
    measured = [f["index"] for f in report["frames"] if f["distance_after"]]
    assert len(report["frames"]) == FRAMES and len(measured) >= 2, report["frames"]
    for series in ("before", "after"):
        expect(page.locator(f"#plot polyline.{series}")).to_have_count(1)
        assert len(page.locator(f"#plot polyline.{series}").get_attribute("points").split()) == len(measured)
        expect(page.locator(f"#plot circle.{series}")).to_have_count(len(measured))
    expect(page.locator("#summary")).to_contain_text(f"of {FRAMES}")
    expect(page.locator("#summary")).to_contain_text("checkerboard-double")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "web_page_result.png"), full_page=True)

    # Another tenant's key sees none of it.
    use_key(page, other_key)
    expect(page.locator("#jobs-empty")).to_be_visible()
    expect(page.locator("#jobs tbody tr")).to_have_count(0)
    assert refused == [] and script_errors == [], (refused, script_errors)
    page.close()
