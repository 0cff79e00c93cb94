"""The dashboard in a real browser: Debian's Chromium, headless, driven by Playwright (which never
downloads a browser of its own here). Logs in through the admin, opens the dashboard of a service
with data, checks that the charts drew and that its numbers match the API, and saves a screenshot
to artifacts/dashboard.png."""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

import pytest

from tests.conftest import counter_url, rollup_all, token

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SCREENSHOT = Path(__file__).resolve().parent.parent / "artifacts" / "dashboard.png"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = pytest.mark.browser

# A canvas "drew" when some pixel is not fully transparent.
_CANVASES_DRAWN = """
() => [...document.querySelectorAll('.chart canvas')].map((canvas) => {
  const pixels = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
  let painted = 0;
  for (let i = 3; i < pixels.length; i += 4) if (pixels[i] !== 0) painted++;
  return {width: canvas.width, height: canvas.height, painted: painted};
})
"""


@pytest.fixture
def sync_playwright():
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    if not Path(CHROMIUM).exists():
        pytest.skip("no Chromium at /usr/bin/chromium (apt-get install chromium); the browser test needs one")
    return sync_api.sync_playwright


@contextlib.contextmanager
def chromium_page(sync_playwright):
    # Playwright's sync API runs an event loop in this thread, where Django refuses ORM calls:
    # open the browser only after the test's data is in place.
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser.new_page(viewport={"width": 1400, "height": 1300})
        finally:
            browser.close()


@pytest.mark.django_db(transaction=True)
def test_dashboard_draws_charts_whose_numbers_match_the_api(
    live_server, sync_playwright, api, make_namespace, django_user_model
):
    django_user_model.objects.create_superuser("operator", "op@example.com", "correct horse")
    namespace = make_namespace("eventual", name="shop")
    writes = {"page-views": [3, 4, 5], "checkouts": [1, 1], "signups": [2]}
    for counter, deltas in writes.items():
        for delta in deltas:
            response = api.post(
                counter_url("shop", counter, "add"), {"delta": delta, "idempotency_token": token()}, format="json"
            )
            assert response.status_code == 200
    rollup_all(namespace)
    expected = api.get(counter_url("shop", "page-views")).json()["count"]
    assert expected == 12

    with chromium_page(sync_playwright) as page:
        _check_dashboard(page, live_server.url, expected)


def _check_dashboard(page, base_url: str, expected: int) -> None:
    page.goto(f"{base_url}/admin/login/?next=/dashboard/")
    page.fill("#id_username", "operator")
    page.fill("#id_password", "correct horse")
    page.click("input[type=submit]")
    page.wait_for_url(f"{base_url}/dashboard/")
    page.select_option("#namespace", "shop")
    page.wait_for_function("document.querySelector('[data-field=ingest]').textContent === '6'")

    canvases = page.evaluate(_CANVASES_DRAWN)
    assert len(canvases) == 2
    assert all(c["width"] > 0 and c["height"] > 0 and c["painted"] > 0 for c in canvases), canvases

    page.fill("#lookup-form input[name=namespace]", "shop")
    page.fill("#lookup-form input[name=counter]", "page-views")
    page.click("#lookup-form button")
    page.wait_for_selector("dd[data-lookup=count]")
    assert int(page.text_content("dd[data-lookup=count]")) == expected
    assert page.text_content("dd[data-lookup=checkpoint]").startswith("12 at ")

    SCREENSHOT.parent.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOT), full_page=True)
