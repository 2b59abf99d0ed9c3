"""The live dashboard (channel/dashboard, served by the channel) against a running stack.

One module-scoped stack: rx + channel + a Tx looping its clip at a modest frame rate, each a real
process on a free loopback port. The endpoint tests read the page's files, its configuration,
the impairment schemas, the Rx's thumbnails and the CORS headers with plain HTTP; the browser test
drives headless Chromium (Debian's ``chromium`` + ``chromium-driver``, through Selenium) the way a
user would: it watches the charts move, breaks the link with the BER slider and reads the
counters the page shows.
"""

from __future__ import annotations

import base64
import io
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest

from experiments.demo import Child, Processes, free_port, get_json, wait_for

pytestmark = pytest.mark.e2e

SCENARIO = "low_motion"
FRAMES = 120
LINK_ENV = {"HOPLINK_LOG_LEVEL": "warning", "HOPLINK_SEED": "0", "HOPLINK_THRESHOLD": "0.99"}
SCREENSHOT = Path("/tmp/hoplink-dashboard.png")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


# --- the demo ------------------------------------------------------------------------------------


def test_demo_prints_the_dashboard_and_loops_until_stopped() -> None:
    """``hoplink demo --loop`` prints a live dashboard URL, streams until SIGTERM (taken as
    Ctrl-C), then prints its summary and leaves no process behind."""
    env = {**os.environ, **LINK_ENV, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "experiments.cli", "demo", "--loop", "--frames", "30"]
    demo = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(x) for x in demo.stdout], daemon=True)
    reader.start()
    out: list[str] = []
    try:
        deadline = time.monotonic() + 60
        while not any("streaming in a loop" in x for x in out):
            assert demo.poll() is None, "".join(out)
            out.append(lines.get(timeout=max(deadline - time.monotonic(), 0.1)))
        (url,) = [x.split()[1] for x in out if x.strip().startswith("dashboard ")]
        assert url.startswith("http://127.0.0.1:") and url.endswith("/dashboard/")
        assert "app.js" in httpx.get(url, timeout=5).text
        config = get_json(url + "config.json")
        rx_url, tx_url = config["rx_api"], config["tx_api"]
        wait_for(lambda: get_json(f"{rx_url}/stats")["frames"] > 40, 30, "the clip to loop")
        demo.send_signal(signal.SIGTERM)
        assert demo.wait(30) == 0
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
    reader.join(10)
    out += [lines.get() for _ in range(lines.qsize())]
    text = "".join(out)
    assert "hit rate" in text and "wall time" in text, text
    for base in (rx_url, tx_url, url):
        with pytest.raises(httpx.ConnectError):
            httpx.get(base, timeout=2)


# --- one stack for the rest of the module ----------------------------------------------------


@dataclass
class Stack:
    rx: Child
    channel: Child
    tx: Child

    @property
    def page(self) -> str:
        return f"{self.channel.url}/dashboard/"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    logs = tmp_path_factory.mktemp("dashboard-logs")
    with Processes(Path(logs), env=LINK_ENV) as procs:
        rx_port, tx_port = free_port(), free_port()
        # Rx and Tx load the codec at the same time; the Tx redials until the Rx answers.
        rx = procs.start(
            "rx",
            ["receiver", "--reference", SCENARIO, "--frames", str(FRAMES)],
            port=rx_port,
            wait=False,
        )
        channel = procs.start(
            "channel",
            [
                "channel",
                "--rx-url",
                rx.ws_url,
                "--rx-api",
                rx.url,
                "--tx-api",
                f"http://127.0.0.1:{tx_port}",
            ],
        )
        tx = procs.start(
            "tx",
            [
                "transmitter",
                "--url",
                channel.ws_url,
                "--scenario",
                SCENARIO,
                "--frames",
                str(FRAMES),
                "--loop",
                "--fps",
                "25",
                "--digest-every",
                "15",
                "--backoff-max",
                "0.5",
            ],
            port=tx_port,
            wait=False,
        )
        procs.wait_healthy(rx)
        procs.wait_healthy(tx)
        yield Stack(rx, channel, tx)


# --- endpoints -----------------------------------------------------------------------------------


def test_channel_serves_the_page_and_its_config(stack: Stack) -> None:
    base = stack.channel.url
    for path in ("/", "/dashboard"):
        r = httpx.get(base + path, timeout=5)
        assert r.status_code == 307 and r.headers["location"] == "/dashboard/"
    page = httpx.get(stack.page, timeout=5)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'src="app.js"' in page.text and 'href="style.css"' in page.text
    # Before the first data every process shows a neutral state, not a verdict.
    assert 'id="svc-tx" data-state="unknown"' in page.text and "not configured" not in page.text
    assert "http" not in page.text.split("<body>")[0].replace('rel="icon"', "")  # nothing remote
    script = httpx.get(stack.page + "app.js", timeout=5)
    assert script.headers["content-type"].startswith("text/javascript")
    assert httpx.get(stack.page + "style.css", timeout=5).status_code == 200
    assert httpx.get(stack.page + "secrets.txt", timeout=5).status_code == 404
    config = get_json(stack.page + "config.json")
    assert config["rx_api"] == stack.rx.url and config["tx_api"] == stack.tx.url
    assert config["channel_api"] == ""
    assert config["directions"] == ["tx_to_rx", "rx_to_tx"]
    assert config["corrupt"]["rho"] == 1.0 and config["corrupt"]["sigma"] > 0


def test_schemas_endpoint_lists_every_impairment(stack: Stack) -> None:
    from channel.impairments import IMPAIRMENTS, impairment_schemas

    schemas = get_json(f"{stack.channel.url}/impairments/schemas")
    assert schemas == impairment_schemas()
    assert list(schemas) == list(IMPAIRMENTS)  # pipeline order: the page shows them so
    assert schemas["bit_errors"]["properties"]["ber"]["maximum"] == 1.0


def test_reads_are_cross_origin_writes_are_not(stack: Stack) -> None:
    origin = {"Origin": stack.channel.url}
    for child in (stack.rx, stack.tx):
        r = httpx.get(f"{child.url}/stats", headers=origin, timeout=5)
        assert r.headers["access-control-allow-origin"] == "*"
    preflight = httpx.options(
        f"{stack.channel.url}/impairments/tx_to_rx/loss",
        headers={"Origin": "http://example.invalid", "Access-Control-Request-Method": "PUT"},
        timeout=5,
    )
    # A foreign Origin is refused before CORS is consulted (Host/Origin allow-list): the control
    # API answers its own page only.
    assert preflight.status_code == 403


def test_rx_serves_thumbnails_of_the_original_and_the_reconstruction(stack: Stack) -> None:
    from PIL import Image

    url = f"{stack.rx.url}/thumbnails/latest"
    t = wait_for(lambda: (t := get_json(url))["seq"] is not None and t, 30, "a decoded frame")
    assert isinstance(t["psnr"], float) and 0 < t["ssim"] <= 1
    images = []
    for key in ("original", "reconstruction"):
        prefix, data = t[key].split(",", 1)
        assert prefix == "data:image/png;base64"
        images.append(np.asarray(Image.open(io.BytesIO(base64.b64decode(data)))))
    assert images[0].shape == images[1].shape == (64, 64, 3)
    assert not np.array_equal(images[0], images[1])  # a lossy link: the two differ
    later = wait_for(lambda: (u := get_json(url))["seq"] != t["seq"] and u, 10, "a newer frame")
    assert later["session"] == t["session"]


# --- the page in a browser -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.skip("needs Debian's chromium and chromium-driver (see .ci/run)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="hoplink-chromium-")
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--no-first-run",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1400,1500",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


# What the timeline draws for a frame that needed repair or was lost (channel/dashboard/app.js).
FAULT_MARKS = "#timeline .refresh, #timeline .lookup, #timeline rect.concealed, #timeline rect.lost"
# True once the timeline has drawn a newer frame than ``arguments[0]`` (its last seq before the
# resize) and both charts' viewBoxes have the width that app.js's sizeOf() reads off the page now.
REDRAWN_AT_WIDTH = """
const width = (svg) => Math.max(320, Math.round(svg.clientWidth || 960));
const timeline = document.getElementById("timeline");
const psnr = document.getElementById("psnr-line");
return timeline.dataset.lastSeq !== arguments[0]
  && [timeline, psnr].every((svg) => svg.viewBox.baseVal.width === width(svg));
"""


# [seq, x] of every frame's bar on the timeline (HIT, NEW or lost), read off its tooltip.
TIMELINE_PLACES = """
return [...document.querySelectorAll("#timeline rect.hit, #timeline rect.new, #timeline rect.lost")]
  .map((r) => [Number(r.querySelector("title").textContent.match(/^frame (\\d+)/)[1]),
               Number(r.getAttribute("x"))]);
"""


def _impairment(channel_url: str, direction: str, name: str) -> dict | None:
    """The channel's impairment ``name`` on ``direction`` (channel/control.py), or None."""
    views = get_json(f"{channel_url}/impairments/{direction}")
    return next((v for v in views if v["name"] == name), None)


def _int(driver, element_id: str) -> int:
    return int(driver.find_element("id", element_id).text)


def _errors(driver) -> list[dict]:
    return [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]


@pytest.mark.browser
def test_dashboard_shows_the_link_and_its_slider_breaks_it(stack: Stack, browser) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    driver = browser
    driver.get(stack.page)
    by_id = lambda i: driver.find_element("id", i)  # noqa: E731

    # The page fills in from the three processes' streams.
    wait_for(lambda: _int(driver, "frames-count") > 0, 30, "frames on the page")
    wait_for(lambda: by_id("svc-tx").get_attribute("data-state") == "streaming", 10, "Tx state")
    first = (_int(driver, "frames-count"), int(by_id("timeline").get_attribute("data-last-seq")))
    wait_for(
        lambda: (
            _int(driver, "frames-count") > first[0]
            and int(by_id("timeline").get_attribute("data-last-seq")) > first[1]
        ),
        10,
        "the counters and the timeline to move",
    )
    assert int(by_id("timeline").get_attribute("data-points")) > 0
    assert driver.find_elements("css selector", "#timeline rect.hit")  # bars of HIT frames
    wait_for(
        lambda: (
            (by_id("thumb-original").get_attribute("src") or "").startswith("data:image/png")
            and by_id("thumb-reconstruction").get_attribute("src").startswith("data:image/png")
        ),
        10,
        "the thumbnails",
    )
    assert by_id("digest").get_attribute("data-state") in ("agree", "diverged", "unknown")

    # One control card per (direction, impairment) of the schemas: new impairments show up.
    schemas = get_json(f"{stack.channel.url}/impairments/schemas")
    for direction in ("tx_to_rx", "rx_to_tx"):
        for name in schemas:
            assert driver.find_elements("id", f"card-{direction}-{name}"), (direction, name)

    # Break the forward link with the BER slider (a click on its track, as a user would).
    trouble = lambda: _int(driver, "cue-failures") + _int(driver, "refresh-requests")  # noqa: E731
    before = trouble()
    slider = by_id("ctl-tx_to_rx-bit_errors-ber-slider")
    width = slider.size["width"]
    ActionChains(driver).move_to_element_with_offset(slider, int(width * 0.35), 0).click().perform()
    view = wait_for(
        lambda: _impairment(stack.channel.url, "tx_to_rx", "bit_errors"),
        5,
        "the channel to take the BER",
    )
    assert view["type"] == "bit_errors"
    ber = view["attributes"]["ber"]
    assert 1e-3 < ber < 0.1
    assert float(by_id("ctl-tx_to_rx-bit_errors-ber").get_attribute("value")) == ber
    assert "on" in by_id("card-tx_to_rx-bit_errors").get_attribute("class")
    wait_for(lambda: trouble() >= before + 3, 20, "cue failures / refreshes to rise on the page")
    wait_for(
        lambda: (
            "matched" in by_id("card-tx_to_rx-bit_errors").text
            and "bits flipped" in by_id("card-tx_to_rx-bit_errors").text
        ),
        5,
        "the channel's counters on the card",
    )

    # A one-shot corruption from the page reaches the Rx.
    sent = get_json(f"{stack.channel.url}/stats")["events"]["corrupt"]
    by_id("corrupt-send").click()
    wait_for(
        lambda: get_json(f"{stack.channel.url}/stats")["events"]["corrupt"] == sent + 1,
        5,
        "the corruption event",
    )
    # The feedback direction has its own cards, behind its tab.
    feedback = by_id("card-rx_to_tx-loss")
    assert not feedback.is_displayed()
    by_id("tab-rx_to_tx").click()
    assert feedback.is_displayed() and not by_id("card-tx_to_rx-loss").is_displayed()
    by_id("tab-tx_to_rx").click()

    # The screenshot: the timeline marks the faults, the charts drawn at the window's width.
    wait_for(
        lambda: driver.find_elements("css selector", FAULT_MARKS), 10, "faults on the timeline"
    )
    # Bars sit in frame order, a lost frame where it happened (the Rx lists it when it settles).
    placed = driver.execute_script(TIMELINE_PLACES)
    assert placed and [s for s, _ in sorted(placed, key=lambda p: p[1])] == sorted(
        s for s, _ in placed
    )
    # The last 10 s beside the session: both filled while frames flow.
    assert by_id("hit-rate-recent").text.endswith("%") and by_id("hit-rate").text.endswith("%")
    assert by_id("psnr-recent").text not in ("—", "") and by_id("psnr").text not in ("—", "")
    last_seq = by_id("timeline").get_attribute("data-last-seq")
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1400, height + 250)
    driver.execute_script("window.scrollTo(0, 0)")
    wait_for(
        lambda: driver.execute_script(REDRAWN_AT_WIDTH, last_seq),
        10,
        "the charts to redraw at the new width",
    )
    driver.save_screenshot(str(SCREENSHOT))

    # Unticking the card removes the impairment.
    by_id("ctl-tx_to_rx-bit_errors-enabled").click()
    wait_for(
        lambda: _impairment(stack.channel.url, "tx_to_rx", "bit_errors") is None,
        5,
        "the impairment to be removed",
    )
    assert _errors(driver) == []


@pytest.mark.browser
def test_controls_send_the_channels_control_token(browser, tmp_path: Path) -> None:
    """A channel with HOPLINK_CONTROL_TOKEN answers the page's first change with 401; the page
    then asks for the token and sends it with every change."""
    token = "dashboard-test-token"
    with Processes(tmp_path, env={**LINK_ENV, "HOPLINK_CONTROL_TOKEN": token}) as procs:
        nobody = f"ws://127.0.0.1:{free_port()}/link"  # controls need no Rx
        channel = procs.start("channel", ["channel", "--rx-url", nobody])
        driver = browser
        driver.get(f"{channel.url}/dashboard/")
        by_id = lambda i: driver.find_element("id", i)  # noqa: E731
        field = wait_for(
            lambda: driver.find_elements("id", "ctl-tx_to_rx-loss-probability"), 10, "controls"
        )[0]
        field.clear()
        field.send_keys("0.02\n")
        wait_for(lambda: by_id("token-box").is_displayed(), 5, "the page to ask for the token")
        assert get_json(f"{channel.url}/impairments/tx_to_rx") == []
        by_id("control-token").send_keys(token + "\t")
        field.clear()
        field.send_keys("0.05\n")
        loss = wait_for(
            lambda: _impairment(channel.url, "tx_to_rx", "loss"),
            5,
            "the channel to take the change",
        )
        assert loss["attributes"]["probability"] == 0.05
        assert "on" in by_id("card-tx_to_rx-loss").get_attribute("class")
