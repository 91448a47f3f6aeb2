"""The model service's page in a real headless Chromium (Selenium with Debian's chromedriver), its offline API
reference, subtitles through POST /predict, and the limit on a video's length."""

import re
import shutil
from pathlib import Path

import httpx
import pytest

from selfmm.batch import SCORE_NAMES
from selfmm.model_page import PAGE
from selfmm.model_service import ServiceSettings, create_app
from tests.support.browser import CHROMIUM, NO_CHROMIUM
from tests.support.data import MOSI_CLIPS, MOSI_MEDIA
from tests.support.model_service import running

ARTEFACTS = Path(__file__).resolve().parents[2] / "build" / "test-artefacts"
CHROMEDRIVER = shutil.which("chromedriver")
SETTINGS = ServiceSettings(max_upload_bytes=200 * 2**20, max_concurrent=1, max_waiting=4, max_video_s=60.0)
SVG_NAMESPACE = "http://www.w3.org/2000/svg"  # a name in the page's script, never fetched


@pytest.fixture
def service(real_models, tmp_path):
    app = create_app(real_models.first, SETTINGS, temp_root=tmp_path)
    with running(app) as url, httpx.Client(base_url=url, timeout=300) as client:
        yield url, client


@pytest.fixture
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM or "chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--no-proxy-server", "--window-size=1200,1600"):
        options.add_argument(flag)
    # an explicit driver: Selenium Manager (which would download one) never runs
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER or "chromedriver"), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def submit(browser, url: str, media: Path, text: str = "", subtitles: Path | None = None) -> None:
    """Fill the page's form as a person would and wait for the answer."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(url)
    WebDriverWait(browser, 60).until(lambda b: b.find_elements(By.ID, "card"))
    browser.find_element(By.ID, "media").send_keys(str(media))
    if text:
        browser.find_element(By.ID, "text").send_keys(text)
    if subtitles is not None:
        browser.find_element(By.ID, "subtitles").send_keys(str(subtitles))
    browser.find_element(By.ID, "submit").click()
    WebDriverWait(browser, 300).until(
        lambda b: (
            b.find_element(By.ID, "status").get_attribute("data-done")
            or "error" in b.find_element(By.ID, "status").text
        )
    )


def signed(value: float) -> str:
    return f"{value:+.4f}"


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None or CHROMEDRIVER is None, reason=NO_CHROMIUM + " (with chromium-driver)")
def test_the_page_shows_the_apis_numbers_for_a_real_clip_and_a_timeline(service, browser, long_mosi_video):
    from selenium.webdriver.common.by import By

    url, client = service
    name = "0h-zjBukYpk_1"
    text = MOSI_CLIPS[name][0]
    media = MOSI_MEDIA / f"{name}.mp4"
    submit(browser, url, media, text)
    api = client.post("/predict", files={"file": (media.name, media.read_bytes())}, data={"text": text}).json()
    for key in SCORE_NAMES.values():
        cell = browser.find_element(By.ID, f"value-{key}")
        assert float(cell.get_attribute("data-value") or "nan") == api[key]
        assert cell.text == signed(api[key])
    card = browser.find_element(By.ID, "card").text
    assert "trained on" in card and "real media" in card and "test metrics" in card
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(ARTEFACTS / "model-page.png"))

    submit(browser, url, long_mosi_video.path, subtitles=long_mosi_video.subtitles)
    files = {
        "file": ("long.mkv", long_mosi_video.path.read_bytes()),
        "subtitles": ("long.srt", long_mosi_video.subtitles.read_bytes()),
    }
    segments = client.post("/predict", files=files).json()["segments"]
    assert len(segments) == len(long_mosi_video.parts) == 3
    for i, segment in enumerate(segments):
        cells = browser.find_elements(By.CSS_SELECTOR, f"#segment-{i} td")
        assert cells[2].text == segment["text"]
        for cell, key in zip(cells[3:7], SCORE_NAMES.values(), strict=True):
            assert float(cell.get_attribute("data-value") or "nan") == segment[key]
    assert browser.find_elements(By.CSS_SELECTOR, "#timeline-chart g")  # one group per segment in the chart
    browser.save_screenshot(str(ARTEFACTS / "model-page-timeline.png"))


def test_the_page_and_the_api_reference_need_nothing_from_elsewhere(service):
    url, client = service
    page = client.get("/").text
    assert page == PAGE and 'id="predict"' in page
    assert re.findall(r"https?://[^\s\"'`]+", page.replace(SVG_NAMESPACE, "")) == []
    docs = client.get("/docs").text
    assert re.findall(r"https?://[^\s\"'`]+", docs) == []
    assert "/predict" in docs and "subtitles" in docs and "/openapi.json" in docs
    schema = client.get("/openapi.json").json()
    body = schema["paths"]["/predict"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert set(body["properties"]) == {"file", "text", "subtitles"}


def test_subtitles_in_a_request_give_the_timeline_of_the_clips_scored_alone(service, long_mosi_video):
    _, client = service
    files = {
        "file": ("long.mkv", long_mosi_video.path.read_bytes()),
        "subtitles": ("long.srt", long_mosi_video.subtitles.read_bytes()),
    }
    answer = client.post("/predict", files=files)
    assert answer.status_code == 200, answer.text
    segments = answer.json()["segments"]
    for segment, part in zip(segments, long_mosi_video.parts, strict=True):
        assert (segment["start"], segment["end"], segment["text"], segment["error"]) == (
            part.start,
            part.end,
            part.text,
            "",
        )
        alone = client.post(
            "/predict", files={"file": (part.alone.name, part.alone.read_bytes())}, data={"text": part.text}
        ).json()
        for key in SCORE_NAMES.values():
            assert segment[key] == pytest.approx(alone[key], abs=1e-4)


@pytest.mark.parametrize(
    ("name", "content", "status", "problem"),
    [
        ("talk.srt", b"not subtitles at all", 400, "talk.srt: not readable as SRT"),
        ("talk.txt", b"1\n00:00:00,000 --> 00:00:01,000\nhi\n", 400, "expected an .srt or .vtt file"),
    ],
)
def test_a_bad_subtitles_file_is_refused_naming_it(service, name, content, status, problem):
    _, client = service
    media = MOSI_MEDIA / "0h-zjBukYpk_1.mp4"
    answer = client.post("/predict", files={"file": (media.name, media.read_bytes()), "subtitles": (name, content)})
    assert answer.status_code == status and problem in answer.json()["error"]


def test_a_video_over_the_length_limit_is_refused_with_where_to_score_it(real_models, tmp_path):
    settings = ServiceSettings(max_upload_bytes=2**26, max_concurrent=1, max_waiting=1, max_video_s=5.0)
    app = create_app(real_models.first, settings, temp_root=tmp_path)
    media = MOSI_MEDIA / "0h-zjBukYpk_2.mp4"  # 12.3 s
    with running(app) as url, httpx.Client(base_url=url, timeout=120) as client:
        answer = client.post("/predict", files={"file": (media.name, media.read_bytes())})
        short = client.post("/predict", files={"file": ("short.mp4", (MOSI_MEDIA / "0h-zjBukYpk_1.mp4").read_bytes())})
    assert answer.status_code == 413
    error = answer.json()["error"]
    assert "12.3 s of media, over the limit of 5 s" in error
    assert "selfmm predict" in error and "predict/<dataset>" in error
    assert short.status_code == 200
