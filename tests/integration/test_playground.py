"""The playground page in a real browser: headless Chromium (Debian's `chromium` and
`chromium-driver`, driven by Selenium) loads it from a real server, draws strokes with pointer
events, and reads what the page shows."""

from __future__ import annotations

import shutil
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageDraw

from tests.integration.server import ServerProcess

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")

# Strokes on the 280x280 pad, as lists of points (pixels from its top-left corner).
ONE = [[(140, 40), (140, 240)]]
SEVEN = [[(70, 50), (210, 50), (120, 240)]]
STAR = [[(140, 20), (60, 260), (260, 100), (20, 100), (220, 260), (140, 20)]]


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    server = ServerProcess("--models", "convnet,mlp", "--playground")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if CHROMIUM is None or DRIVER is None:
        pytest.skip("Chromium is not installed (Debian: apt install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1200,1400"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(DRIVER))
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def page(server: ServerProcess, browser: Any) -> Any:
    browser.get(f"http://127.0.0.1:{server.http_port}/")
    until(browser, lambda: "draw a digit" in text(browser, "status"))
    browser.get_log("browser")  # start each test with an empty console
    return browser


def until(browser: Any, condition: Callable[[], bool], timeout: float = 20) -> None:
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"timed out; status: {text(browser, 'status')!r}")
        time.sleep(0.05)


def text(browser: Any, element_id: str) -> str:
    return str(browser.find_element(By.ID, element_id).text)


def draw(browser: Any, strokes: list[list[tuple[int, int]]]) -> None:
    """Each stroke as pointer events: down at its first point, moves in small steps, up."""
    pad = browser.find_element(By.ID, "pad")
    scale = pad.size["width"] / 280  # the pad may be drawn smaller than its 280 pixels
    for stroke in strokes:
        actions = ActionChains(browser, duration=10)
        x, y = stroke[0]
        actions.move_to_element_with_offset(pad, (x - 140) * scale, (y - 140) * scale)
        actions.click_and_hold()
        for nx, ny in stroke[1:]:
            steps = 8
            for _ in range(steps):
                actions.move_by_offset((nx - x) * scale / steps, (ny - y) * scale / steps)
            x, y = nx, ny
        actions.release()
        actions.perform()


def shown_digit(browser: Any) -> str:
    return text(browser, "digit")


def severe_logs(browser: Any) -> list[dict[str, Any]]:
    return [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]


def lit_pixels(browser: Any, element_id: str) -> int:
    """Non-black pixels of a canvas, read in the page."""
    return int(
        browser.execute_script(
            "const c = document.getElementById(arguments[0]);"
            "const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
            "let n = 0; for (let i = 0; i < d.length; i += 4) if (d[i] > 0) n++; return n;",
            element_id,
        )
    )


def test_the_page_is_served_with_its_files_and_a_strict_policy(server: ServerProcess) -> None:
    base = f"http://127.0.0.1:{server.http_port}"
    with urllib.request.urlopen(f"{base}/") as response:
        assert response.headers["Content-Type"].startswith("text/html")
        assert "default-src 'self'" in response.headers["Content-Security-Policy"]
        assert b"/playground/playground.js" in response.read()
    with urllib.request.urlopen(f"{base}/playground/playground.js") as response:
        assert response.headers["Content-Type"].startswith("text/javascript")
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(f"{base}/playground/secrets.txt")
    assert missing.value.code == 404


def test_drawing_a_one_and_a_seven_shows_them_with_every_layer(page: Any) -> None:
    draw(page, ONE)
    until(page, lambda: shown_digit(page) == "1")
    assert "Looks like a digit" in text(page, "not-digit")
    assert lit_pixels(page, "input") > 20  # the 28x28 image as the model saw it
    bars = page.find_elements(By.CSS_SELECTOR, "#bars li")
    assert len(bars) == 10 and "top" in bars[1].get_attribute("class")
    panels = page.find_elements(By.CSS_SELECTOR, "#layers details")
    names = [panel.get_attribute("data-layer") for panel in panels]
    assert names == ["conv1", "conv2", "conv3", "conv4", "conv5", "conv6", "fc1"]
    maps = {
        n: len(p.find_elements(By.CSS_SELECTOR, ".body > *"))
        for n, p in zip(names, panels, strict=True)
    }
    assert maps == {
        "conv1": 20,
        "conv2": 20,
        "conv3": 50,
        "conv4": 50,
        "conv5": 50,
        "conv6": 50,
        "fc1": 500,
    }
    page.find_element(By.ID, "clear").click()
    assert shown_digit(page) == "?"
    draw(page, SEVEN)
    until(page, lambda: shown_digit(page) == "7")
    assert severe_logs(page) == []


def test_a_scribble_is_not_a_digit(page: Any) -> None:
    draw(page, STAR)
    until(page, lambda: "does not look like a digit" in text(page, "not-digit"))
    assert shown_digit(page) == "✗"
    assert severe_logs(page) == []


def test_the_mlp_shows_its_sixteen_hidden_units_and_their_strongest_connections(
    page: Any,
) -> None:
    picker = page.find_element(By.ID, "model")
    options = [o.get_attribute("value") for o in picker.find_elements(By.TAG_NAME, "option")]
    assert "mlp/3" in options and "convnet/3" in options
    page.execute_script(
        "const s = document.getElementById('model'); s.value = 'mlp/3';"
        "s.dispatchEvent(new Event('change'));"
    )
    until(page, lambda: "mlp v3 (" in text(page, "status"))
    draw(page, ONE)
    until(page, lambda: shown_digit(page) == "1" and "mlp v3 answered" in text(page, "status"))
    units = page.find_elements(By.CSS_SELECTOR, "#layers .units span")
    assert len(units) == 32  # hidden1 and hidden2
    network = page.find_element(By.CSS_SELECTOR, '[data-view="network"] canvas')
    assert network.get_attribute("data-edges") == str(3 * (16 + 10))  # 3 into every unit
    note = page.find_element(By.CSS_SELECTOR, '[data-view="network"] .note').text
    assert note.startswith("Strongest into 1: hidden2 unit"), note
    assert note.count("hidden2 unit") == 3
    assert severe_logs(page) == []


def test_the_page_fits_a_phone_and_the_keyboard_clears_the_pad(page: Any) -> None:
    page.set_window_size(390, 844)
    try:
        overflow = page.execute_script(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0  # nothing wider than the screen: no sideways scrolling
        draw(page, ONE)
        until(page, lambda: shown_digit(page) == "1")
        page.find_element(By.ID, "pad").send_keys(Keys.ESCAPE)
        until(page, lambda: shown_digit(page) == "?")
    finally:
        page.set_window_size(1200, 1400)


def test_an_image_file_opened_on_the_page_is_classified(page: Any, tmp_path: Path) -> None:
    image = Image.new("L", (280, 280), 255)
    ImageDraw.Draw(image).line([(70, 50), (210, 50), (120, 240)], fill=0, width=18)
    path = tmp_path / "seven.png"
    image.save(path)
    page.find_element(By.ID, "file").send_keys(str(path))
    until(page, lambda: shown_digit(page) == "7")
    (tmp_path / "notes.txt").write_text("not an image")
    page.find_element(By.ID, "file").send_keys(str(tmp_path / "notes.txt"))
    until(page, lambda: "not an image" in text(page, "status"))
    assert severe_logs(page) == []
