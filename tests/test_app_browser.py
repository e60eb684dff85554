"""The app in a real browser: Debian's Chromium driven by Playwright against the app served
in-process with a tiny model. Screenshots are kept under test-artifacts/ (gitignored)."""

from pathlib import Path

import pytest

import app
from steering.serve.service import SteeringService

playwright = pytest.importorskip("playwright.sync_api")
expect = playwright.expect

pytestmark = pytest.mark.slow

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
def served(tiny_env):  # noqa: F811
    service = SteeringService(database_url=f"sqlite:///{tiny_env / 'browser.db'}", dtype="float32")
    demo = app.build_demo(service)
    _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True, server_name="127.0.0.1")
    yield service, url
    demo.close()


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is not installed")
    ARTIFACTS.mkdir(exist_ok=True)
    expect.set_options(timeout=TIMEOUT_MS)
    with playwright.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, served):
    page = browser.new_page(viewport={"width": 1400, "height": 1800})
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(served[1])
    page.wait_for_selector("#prompt textarea")
    yield page
    page.close()


def drag_slider(page, elem_id: str, to: float) -> None:
    """Press on the slider's thumb and drag it, as a person would (one release at the end)."""
    track = page.locator(f"#{elem_id} input[type=range]").bounding_box()
    y = track["y"] + track["height"] / 2
    page.mouse.move(track["x"] + track["width"] * 0.5, y)
    page.mouse.down()
    for fraction in (0.6, 0.7, 0.8, to):
        page.mouse.move(track["x"] + track["width"] * fraction, y, steps=3)
    page.mouse.up()


def wait_for_points(page, count: int) -> None:
    """Wait until the frontier plot holds `count` generations (the "latest" marker aside)."""
    page.wait_for_function(
        """n => {
            const plot = document.querySelector('#frontier .js-plotly-plot');
            if (!plot || !plot.data) return false;
            const points = plot.data.filter(t => t.mode === 'markers' && t.name !== 'latest')
                .reduce((total, t) => total + t.x.length, 0);
            return points === n;
        }""",
        arg=count,
    )


def short_answers(page) -> None:
    page.click("#decoding")
    page.fill("#max-tokens input[type=number]", "12")
    page.locator("#max-tokens input[type=number]").press("Enter")


def test_slide_generate_plot_and_vote(page):
    short_answers(page)
    page.fill("#prompt textarea", "Write a kind note to a neighbour.")
    drag_slider(page, "w-positivity", 0.9)
    # the release regenerates: streamed text first, then scores, the plot and the hypervolume
    expect(page.locator("#response textarea")).not_to_have_value("")
    expect(page.locator("#hypervolume")).to_contain_text("Hypervolume")
    assert float(page.locator("#used-positivity input").input_value()) > 0.6
    wait_for_points(page, 1)
    page.click("#generate")
    wait_for_points(page, 2)
    page.screenshot(path=ARTIFACTS / "app-explore.png", full_page=True)
    page.click("#sweep")  # clp over the 0.5 grid: three more points
    wait_for_points(page, 5)
    page.screenshot(path=ARTIFACTS / "app-sweep.png", full_page=True)

    page.get_by_role("tab", name="Rate").click()
    expect(page.locator("#votes")).to_contain_text("Your votes: 0")
    page.click("#new-pair")
    expect(page.locator("#text-a textarea")).not_to_have_value("")
    expect(page.locator("#text-b textarea")).not_to_have_value("")
    expect(page.locator("#reveal")).not_to_contain_text("method")  # hidden until the vote
    page.click("#vote-a")
    expect(page.locator("#votes")).to_contain_text("Your votes: 1")
    expect(page.locator("#reveal")).to_contain_text("method")
    expect(page.locator("#vote-b")).to_be_disabled()
    page.screenshot(path=ARTIFACTS / "app-rate.png", full_page=True)
    # a misclick taken back: the vote is undone (and recorded) and the pair can be voted again
    page.click("#undo")
    expect(page.locator("#reveal")).to_contain_text("undone")
    expect(page.locator("#votes")).to_contain_text("Your votes: 0")
    page.click("#vote-b")
    expect(page.locator("#votes")).to_contain_text("Your votes: 1")
    # the browser keeps the identity the server signed for it
    token = page.evaluate("localStorage.getItem('steering-rater-token')")
    assert token

    page.get_by_role("tab", name="Dashboard").click()
    expect(page.locator("#counts")).to_contain_text("1 ratings")
    page.screenshot(path=ARTIFACTS / "app-dashboard.png", full_page=True)


def test_generated_markup_is_shown_as_text(page, served, monkeypatch):
    service, _ = served
    evil = (
        '<script>window.__xss = 1</script><img src=x onerror="window.__xss = 2">'
        '<b id="injected">bold</b>'
    )

    def stream(prompt, method, weights, decoding):
        yield evil[:30]
        yield evil
        steerer = service.steerer("base")
        yield service._score_and_store(steerer, prompt, [evil], [weights], decoding, [9], 0.1)[0]

    monkeypatch.setattr(service, "stream", stream)
    short_answers(page)
    page.fill("#prompt textarea", "Say something dangerous.")
    page.click("#generate")
    expect(page.locator("#hypervolume")).to_contain_text("Hypervolume")
    assert page.locator("#response textarea").input_value() == evil
    # plotly listens on a drag layer above the markers, so move the mouse there
    page.locator("#frontier .scatterlayer .point").last.hover(force=True)
    expect(page.locator("#frontier .hoverlayer")).to_contain_text("<script>")
    page.locator("#chooser input").click()
    page.get_by_role("option").first.click()
    expect(page.locator("#point-text textarea")).to_have_value(evil)
    assert page.evaluate("window.__xss") is None
    assert page.locator("#injected").count() == 0
    assert page.locator("img[src='x']").count() == 0
    page.screenshot(path=ARTIFACTS / "app-markup-as-text.png", full_page=True)
