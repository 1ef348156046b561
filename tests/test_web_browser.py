"""The web view in a real headless browser (Debian's chromium driven by Playwright) against a running
`edge_ad run --web` subprocess on a video file with a real bundle: the live image moves, alarms appear with
thumbnails, a threshold change with the token makes a new bundle version the status then shows, the same change
without the token is refused, and /metrics parses and counts. The page's screenshot is kept as an artifact
(EDGE_AD_TEST_ARTIFACTS, default test-artifacts/ in the checkout)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from edge_ad import bundle as B
from edge_ad import data as D
from edge_ad.runtime.detector import open_detector
from helpers import wait_until

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
if not Path(CHROMIUM).is_file():
    pytest.skip(f"{CHROMIUM} not found: apt-get install chromium (tools/setup.sh --dev does)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright not installed (pip install -e '.[dev]')")
pytest.importorskip("flask", reason="the web extra is not installed (pip install 'edge_ad[web]')")
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = Path(os.environ.get("EDGE_AD_TEST_ARTIFACTS", ROOT / "test-artifacts"))
TOKEN = "line3-web-token-0123456789"
PATTERN = ["good"] * 12 + ["bad"] * 4 + ["good"] * 12  # one defect burst per pass: one alarm per pass of the video
FPS = 25
URL_LINE = re.compile(r"web view at (http://\S+/)")
WAIT_S = 30  # generous deadlines: conditions usually hold in well under a second


def painted(img: np.ndarray) -> np.ndarray:
    out = img.copy()
    cv2.rectangle(out, (30, 40), (90, 80), (0, 0, 255), -1)  # a large red patch, as in test_loop
    return out


@pytest.fixture(scope="module")
def line(demo_root, tiny_onnx, tmp_path_factory):
    """A looped line video and a part bundle whose threshold separates its good and painted frames."""
    work = tmp_path_factory.mktemp("web_line")
    goods = [cv2.resize(D.load_image(p), (128, 128)) for p in D.list_images(demo_root / "train" / "good")]
    frames = [goods[i % len(goods)] if k == "good" else painted(goods[i % len(goods)]) for i, k in enumerate(PATTERN)]
    video = work / "line.avi"
    w = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (128, 128))
    for f in frames:
        w.write(f)
    w.release()
    det = open_detector(tiny_onnx)
    cap, scores = cv2.VideoCapture(str(video)), []
    while (ok_frame := cap.read())[0]:
        scores.append(det.detect(ok_frame[1]).score)
    good = max(s for s, k in zip(scores, PATTERN) if k == "good")
    bad = min(s for s, k in zip(scores, PATTERN) if k == "bad")
    assert bad > good, "the tiny model must separate the painted frames"
    threshold = (good + bad) / 2
    info = json.loads(tiny_onnx.with_suffix(".json").read_text())
    info["threshold"] = threshold
    (work / "model.json").write_text(json.dumps(info))
    goods_scores = [s for s, k in zip(scores, PATTERN) if k == "good"]  # what calibrate stores: validation goods
    (work / "scores.json").write_text(json.dumps({"threshold": threshold, "val_good": [
        {"image": f"{i}.png", "score": s} for i, s in enumerate(goods_scores)]}))
    B.write_bundle(work / "parts", "demo", {"model.onnx": tiny_onnx, "model.json": work / "model.json",
                                            "scores.json": work / "scores.json"},
                   {"method": "rd", "threshold": threshold, "metrics": {"val_false_alarm_rate": 0.0, "image_auroc": 1.0},
                    "readiness": {"ready": True, "reason": "separates the painted defects"}})
    return {"work": work, "video": video, "threshold": threshold, "good": good, "bad": bad}


@pytest.fixture(scope="module")
def station(line):
    """`edge_ad run --web 127.0.0.1:0` as a subprocess; the URL comes from its start-up log line."""
    work = line["work"]
    (work / "token").write_text(TOKEN + "\n")
    cfg = {"station": "line3", "part": "demo", "parts_dir": str(work / "parts"), "frame_log": "",
           "camera": {"source": str(line["video"]), "live": True},
           "debounce": {"window": 3, "min_anomalous": 2, "hold_s": 0.0},
           "evidence": {"dir": str(work / "evidence"), "max_mb": 50.0},
           "web": {"token_file": str(work / "token"), "live_fps": 5.0}}
    (work / "station.yaml").write_text(yaml.safe_dump(cfg))
    proc = subprocess.Popen([sys.executable, "-m", "edge_ad", "run", "--config", str(work / "station.yaml"),
                             "--web", "127.0.0.1:0"], cwd=work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)
    reader.start()
    assert wait_until(lambda: any(URL_LINE.search(x) for x in lines) or proc.poll() is not None, timeout=60), lines
    url = next((m.group(1) for x in lines if (m := URL_LINE.search(x))), None)
    assert url and url.startswith("http://127.0.0.1:"), "".join(lines)
    yield {"url": url, "log": lines, "proc": proc, **line}
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0, "".join(lines[-20:])
    reader.join(5)
    assert not any(TOKEN in x for x in lines), "the token must never be logged"


@pytest.fixture(scope="module")
def page(station):
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        pg = browser.new_page(viewport={"width": 1280, "height": 900})
        pg.set_default_timeout(WAIT_S * 1000)
        pg.goto(station["url"])
        yield pg
        browser.close()


def status_text(page, key: str) -> str:
    return page.locator(f'#status [data-k="{key}"]').first.inner_text()


def metrics(url: str) -> dict:
    text = urllib.request.urlopen(url + "metrics", timeout=10).read().decode()
    return {s.name: s.value for fam in text_string_to_metric_families(text) for s in fam.samples
            if s.name in ("edge_ad_frames_total", "edge_ad_alarms_total")}


def test_live_image_changes_between_two_reads(page):
    page.wait_for_function("() => document.querySelector('#live').naturalWidth > 0")
    first = page.locator("#live").screenshot()
    later = {}
    assert wait_until(lambda: later.setdefault("png", page.locator("#live").screenshot()) != first
                      or later.pop("png") is None, timeout=WAIT_S, interval=0.1)


def test_status_shows_the_station(page, station):
    page.wait_for_function("() => document.querySelector('#status [data-k=version]').textContent === 'v1'")
    assert status_text(page, "part") == "demo" and status_text(page, "method") == "rd"
    assert status_text(page, "backend") not in ("", "–") and status_text(page, "camera") == "ok"
    assert status_text(page, "readiness") == "ready: separates the painted defects"
    assert float(status_text(page, "threshold")) == pytest.approx(station["threshold"], rel=1e-3)
    page.wait_for_function("() => Number(document.querySelector('#status [data-k=ok]').textContent) > 0")
    assert urllib.request.urlopen(station["url"] + "healthz", timeout=10).status == 200


def test_an_anomalous_frame_makes_a_new_alarm_row_with_a_thumbnail(page):
    rows = page.locator("#alarms tr.alarm")
    seen = set(rows.evaluate_all("rs => rs.map(r => r.dataset.id)"))
    page.wait_for_function("""seen => [...document.querySelectorAll('#alarms tr.alarm')].some(r =>
        !seen.includes(r.dataset.id) && r.querySelector('img.thumb') && r.querySelector('img.thumb').complete
        && r.querySelector('img.thumb').naturalWidth > 0)""", arg=sorted(seen))
    newest = rows.first
    assert float(newest.locator("td").nth(2).inner_text()) > float(newest.locator("td").nth(3).inner_text())
    newest.locator("a").click()  # the row opens the full evidence
    page.wait_for_function("() => [...document.images].some(i => i.src.endsWith('/overlay.jpg') && i.naturalWidth > 0)")
    assert page.locator("table tbody tr").count() >= 1 and "Alarm" in page.locator("h2").first.inner_text()
    page.go_back()
    page.wait_for_function("() => document.querySelector('#status [data-k=version]').textContent !== '–'")


def test_the_same_change_without_the_token_is_refused(page, station):
    versions = B.versions(station["work"] / "parts", "demo")
    code = page.evaluate("""async () => (await fetch('/api/threshold', {method: 'POST',
        headers: {'Content-Type': 'application/json'}, body: JSON.stringify({threshold: 1.0, who: 'mallory'})})).status""")
    assert code == 401
    page.fill("#new-threshold", str(station["threshold"] * 1.01))
    page.fill("#who", "mallory")
    page.fill("#token", "not-the-token-at-all")
    page.click("#apply")
    page.wait_for_function("() => document.querySelector('#message').textContent.startsWith('Refused')")
    assert "token" in page.locator("#message").inner_text()
    assert B.versions(station["work"] / "parts", "demo") == versions


def test_a_threshold_change_with_the_token_makes_a_new_version_the_status_shows(page, station):
    root = station["work"] / "parts"
    new = round((station["good"] + station["bad"]) / 2 * 1.01, 6)  # still between the good and the painted frames
    assert station["good"] < new < station["bad"]
    before = B.versions(root, "demo")
    page.fill("#new-threshold", str(new))
    page.fill("#who", "ana")
    page.fill("#token", TOKEN)
    page.click("#apply")
    page.wait_for_function("() => document.querySelector('#message').textContent.startsWith('Done')")
    version = max(B.versions(root, "demo"))
    assert version == max(before) + 1 and B.current_version(root, "demo") == version
    change = B.read_manifest(root / "demo" / f"v{version}")["threshold_change"]
    assert change["new"] == new and change["who"].startswith("ana (web, 127.0.0.1)") and change["old"] > 0
    page.wait_for_function(f"() => document.querySelector('#status [data-k=version]').textContent === 'v{version}'")
    page.wait_for_function(f"() => Math.abs(Number(document.querySelector('#status [data-k=threshold]').textContent) - {new})"
                           f" < {new * 1e-3}")
    page.wait_for_selector(f'#parts tr.current[data-version="{version}"]')
    assert any("reload" in x.lower() for x in station["log"])


def test_metrics_parse_and_the_frame_counter_grows(station):
    first = metrics(station["url"])
    assert first["edge_ad_frames_total"] > 0
    assert wait_until(lambda: metrics(station["url"])["edge_ad_frames_total"] > first["edge_ad_frames_total"],
                      timeout=WAIT_S, interval=0.2)


def test_screenshot_artifact(page):
    page.wait_for_function("() => document.querySelector('#live').naturalWidth > 0")
    page.wait_for_selector("#alarms tr.alarm img.thumb")
    page.wait_for_function("() => document.querySelectorAll('#plot polyline').length > 0")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / "web_view.png"
    page.screenshot(path=str(path), full_page=True)
    img = cv2.imread(str(path))
    assert img is not None and img.shape[1] == 1280 and img.std() > 10  # a picture, not a blank page
    if shutil.which("true"):  # keep the log of where it went
        print(f"screenshot: {path}")
