"""The case viewer in Chromium: from the browse page to a lumbarization case, then scrolling,
the linked crosshair, windows, the overlay, the legend, and a saved view restored from its URL."""

from __future__ import annotations

import re
import time

import pytest
from playwright.sync_api import expect

from viewer.models import Case

pytestmark = pytest.mark.browser


def _lumbarization_ids() -> set[str]:
    return set(
        Case.objects.filter(curated_anomaly="lumbarization").values_list("case_id", flat=True)
    )


def _stage_centre(page, panel: str) -> tuple[float, float]:
    box = page.locator(f'[data-panel="{panel}"] [data-role="stage"]').bounding_box()
    return box["x"] + box["width"] / 2, box["y"] + box["height"] / 2


def test_filter_open_scroll_click_window_overlay_and_legend(site, page, viewer, shot):
    # Browse: grid, then the lumbarization facet; only those cases remain.
    expected = _lumbarization_ids()
    assert len(expected) == 3
    page.goto(f"{site}/")
    page.click("#view-grid")
    page.click('[data-facet="anomaly"] a[data-value="lumbarization"]')
    expect(page.locator("#result-count")).to_have_text("3")
    cards = page.locator("#case-grid .card")
    assert set(cards.evaluate_all("cards => cards.map((c) => c.dataset.case)")) == expected
    page.wait_for_function(
        "[...document.querySelectorAll('#case-grid img')]"
        ".every((i) => i.complete && i.naturalWidth > 0)"
    )
    shot("browse-lumbarization")

    # Open one from its card.
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    case_id = sorted(expected)[0]
    page.click(f'#case-grid .card[data-case="{case_id}"] a')
    page.wait_for_url(re.compile(rf"/cases/{re.escape(case_id)}/"))
    page.wait_for_function("document.body.dataset.viewsReady === 'true'")
    viewer.wait_ready()
    x_size, y_size, z_size = viewer.volume()["shape"]
    shot("opened")

    # Neighbouring slices are prefetched.
    start = viewer.index("axial")
    page.wait_for_function(
        "(n) => performance.getEntriesByType('resource')"
        ".some((e) => e.name.includes(`/slices/axial/${n}.png`))",
        arg=start - 1,
    )
    assert any(f"/slices/axial/{start + 1}.png" in url for url in requests)

    # Wheel over the axial view: three notches up, three slices up.
    page.mouse.move(*_stage_centre(page, "axial"))
    for _ in range(3):
        page.mouse.wheel(0, -100)
    viewer.wait_for("document.querySelector('[data-panel=axial]').dataset.index == arg", start + 3)
    expect(page.locator('[data-panel="axial"] [data-role="slice-info"]')).to_contain_text(
        f"{start + 4} / {z_size}"
    )
    # Fast scrolling: the last slice asked for is the one drawn (stale requests lose).
    for _ in range(12):
        page.mouse.wheel(0, 100)
    final = start + 3 - 12
    viewer.wait_for("document.querySelector('[data-panel=axial]').dataset.index == arg", final)
    assert f"/slices/axial/{final}.png" in viewer.drawn_url("axial")

    # Click in the sagittal view: the axial and coronal views follow to that point.
    sagittal = viewer.index("sagittal")
    col, row = y_size // 2 + 3, z_size // 3
    point = viewer.tile_point("sagittal", col, row)
    page.mouse.click(point["x"], point["y"])
    viewer.wait_for(
        "document.querySelector('[data-panel=axial]').dataset.index == arg", z_size - 1 - row
    )
    assert viewer.index("coronal") == y_size - 1 - col
    assert viewer.index("sagittal") == sagittal
    assert viewer.state()["cursor"] == [sagittal, y_size - 1 - col, z_size - 1 - row]
    shot("crosshair")

    # Window preset: the pixels change, the values are shown.
    bone_grey = viewer.mean_grey("axial")
    page.click('[data-window="soft_tissue"]')
    viewer.wait_for(
        "document.querySelector('#viewer').viewer.views.axial.tile.url.includes(arg)",
        "window=soft_tissue",
    )
    # The narrower soft-tissue window brightens tissue (HU above its level) in the same slice.
    assert viewer.mean_grey("axial") > 1.2 * bone_grey
    expect(page.locator('[data-window="soft_tissue"]')).to_have_attribute("aria-pressed", "true")
    expect(page.locator("#window-width")).to_have_value("400")
    expect(page.locator("#window-level")).to_have_value("40")
    page.click('[data-window="bone"]')

    # Overlay: label colours present, then absent.
    viewer.wait_ready()
    coloured = {panel: viewer.coloured_pixels(panel) for panel in ("sagittal", "coronal")}
    assert all(n > 100 for n in coloured.values()), coloured
    shot("overlay-on")
    page.click("#overlay-toggle")
    viewer.wait_for(
        "Object.values(document.querySelector('#viewer').viewer.views)"
        ".every((v) => v.tile.url.includes('overlay=0'))"
    )
    for panel in ("axial", "sagittal", "coronal", "projection"):
        assert viewer.coloured_pixels(panel) == 0, panel
    shot("overlay-off")
    page.click("#overlay-toggle")

    # Legend: clicking L6 moves every view to its centroid; "alone" draws only it.
    l6 = next(v for v in viewer.volume()["vertebrae"] if v["name"] == "L6")
    page.click('.legend li[data-name="L6"] .legend-jump')
    viewer.wait_for(
        "document.querySelector('[data-panel=axial]').dataset.index == arg",
        l6["positions"]["axial"]["index"],
    )
    for plane in ("coronal", "sagittal"):
        assert viewer.index(plane) == l6["positions"][plane]["index"]
    assert viewer.state()["cursor"] == l6["voxel"]
    # HU and vertebra name under the mouse (the L6 centroid, in the sagittal view).
    sag = l6["positions"]["sagittal"]
    point = viewer.tile_point("sagittal", sag["col"], sag["row"])
    page.mouse.move(point["x"], point["y"])
    expect(page.locator("#viewer-probe")).to_contain_text(re.compile(r"HU -?\d+ · L6 · voxel"))
    expect(page.locator('.legend li[data-name="L6"]')).to_have_class(re.compile("under-pointer"))
    # Slice numbers come with their position in mm.
    expect(page.locator('[data-panel="axial"] [data-role="slice-info"]')).to_contain_text(
        re.compile(rf"{l6['positions']['axial']['index'] + 1} / {z_size} · z -?[\d.]+ mm")
    )
    page.click('.legend li[data-name="L6"] .legend-solo')
    viewer.wait_for(
        "document.querySelector('#viewer').viewer.views.sagittal.tile.url.includes(arg)",
        "labels=25",
    )
    assert viewer.coloured_pixels("sagittal") > 0
    shot("legend-l6-alone")
    page.wait_for_function("location.search.includes('solo=L6')")

    # The metadata panel below: source, anomalies from both sources, download links.
    expect(page.locator("#anomaly-curated")).to_have_text("lumbarization")
    expect(page.locator("#anomaly-labels")).to_contain_text("lumbarization")
    for which in ("image", "label"):
        expect(page.locator(f'#metadata a[href$="/files/{which}/"]')).to_have_count(1)


def test_saved_view_state_is_restored_from_the_url(site, page, viewer, shot):
    case_id = sorted(_lumbarization_ids())[-1]
    url = f"{site}/cases/{case_id}/"
    viewer.open(url)
    x_size, y_size, z_size = viewer.volume()["shape"]
    ax, co, sa = z_size // 4, y_size // 2 + 2, x_size // 2 - 3
    query = f"ax={ax}&co={co}&sa={sa}&ww=600&wl=100&ov=0&pm=minip&pp=sagittal&slab=20"
    viewer.open(f"{url}?{query}")
    indices = {plane: viewer.index(plane) for plane in ("axial", "coronal", "sagittal")}
    assert indices == {"axial": ax, "coronal": co, "sagittal": sa}
    expect(page.locator("#window-width")).to_have_value("600")
    expect(page.locator("#window-level")).to_have_value("100")
    expect(page.locator('[data-window][aria-pressed="true"]')).to_have_count(0)
    expect(page.locator("#overlay-toggle")).not_to_be_checked()
    expect(page.locator("#projection-mode")).to_have_value("minip")
    expect(page.locator("#projection-plane")).to_have_value("sagittal")
    expect(page.locator("#projection-slab")).to_have_value("20")
    expect(page.locator('[data-panel="projection"] [data-role="slice-info"]')).to_contain_text(
        "slab 20 mm"
    )
    for panel in ("axial", "sagittal", "coronal", "projection"):
        assert viewer.coloured_pixels(panel) == 0
    assert f"center={sa}" in viewer.drawn_url("projection")
    shot("restored")

    # A link the viewer writes reproduces the view when opened again.
    page.mouse.move(*_stage_centre(page, "coronal"))
    page.keyboard.press("ArrowUp")
    page.click('[data-window="lung"]')
    page.click("#overlay-toggle")
    page.click("#overlay-outline")
    page.click('.legend input[data-region="thoracic"]')
    page.wait_for_function("location.search.includes('ol=1') && location.search.includes('hide=')")
    viewer.wait_ready()
    saved_url, saved_state = page.url, viewer.state()
    drawn = {panel: viewer.drawn_url(panel) for panel in ("axial", "sagittal", "coronal")}
    assert "w=lung" in saved_url and f"co={co + 1}" in saved_url
    viewer.open(saved_url)
    state = viewer.state()
    for key in ("cursor", "window", "overlay", "outline", "hidden", "projection", "opacity"):
        assert state[key] == saved_state[key], key
    assert {panel: viewer.drawn_url(panel) for panel in drawn} == drawn
    assert viewer.coloured_pixels("sagittal") > 0
    shot("reopened")


def test_help_overlay_keyboard_shortcuts_and_right_drag_window(site, page, viewer):
    case_id = sorted(_lumbarization_ids())[0]
    viewer.open(f"{site}/cases/{case_id}/")
    page.keyboard.press("?")
    help_dialog = page.locator("#viewer-help")
    expect(help_dialog).to_be_visible()
    for text in ("Wheel", "Right-drag", "Bone window", "Lung window", "overlay", "this help"):
        expect(help_dialog).to_contain_text(text)
    page.keyboard.press("Escape")
    expect(help_dialog).to_be_hidden()

    start = viewer.index("axial")
    page.keyboard.press("ArrowUp")
    viewer.wait_for("document.querySelector('[data-panel=axial]').dataset.index == arg", start + 1)
    page.keyboard.press("PageDown")
    viewer.wait_for("document.querySelector('[data-panel=axial]').dataset.index == arg", start - 9)
    page.keyboard.press("2")
    expect(page.locator('[data-window="soft_tissue"]')).to_have_attribute("aria-pressed", "true")

    # Right-drag: to the right widens the window, downward raises the level; values shown.
    x, y = _stage_centre(page, "coronal")
    page.mouse.move(x, y)
    page.mouse.down(button="right")
    page.mouse.move(x + 60, y + 30, steps=4)
    page.mouse.up(button="right")
    viewer.wait_for(
        "document.querySelector('#viewer').viewer.views.coronal.tile.url.includes('ww=')"
    )
    window = viewer.state()["window"]
    assert window["preset"] is None and window["width"] > 400 and window["level"] > 40
    expect(page.locator("#window-width")).to_have_value(str(window["width"]))
    expect(page.locator("#window-level")).to_have_value(str(window["level"]))
    expect(page.locator("[data-window][aria-pressed=true]")).to_have_count(0)
    page.keyboard.press("2")
    page.keyboard.press("o")
    expect(page.locator("#overlay-toggle")).not_to_be_checked()
    page.keyboard.press("f")  # enlarges the active view: the one under the mouse, coronal
    expect(page.locator('[data-panel="coronal"]')).to_have_class(re.compile("maximized"))
    expect(page.locator('[data-panel="sagittal"]')).to_be_hidden()
    page.keyboard.press("Escape")
    expect(page.locator('[data-panel="sagittal"]')).to_be_visible()
    viewer.wait_ready()


@pytest.mark.parametrize("size", [(1280, 720), (1920, 1080)], ids=["1280x720", "1920x1080"])
def test_four_views_fit_the_screen(site, page, viewer, shot, size):
    width, height = size
    page.set_viewport_size({"width": width, "height": height})
    case_id = sorted(_lumbarization_ids())[0]
    viewer.open(f"{site}/cases/{case_id}/")
    for panel in ("axial", "sagittal", "coronal", "projection"):
        box = page.locator(f'[data-panel="{panel}"] [data-role="stage"]').bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= width, panel
        assert box["y"] >= 0 and box["y"] + box["height"] <= height, panel
        assert box["height"] >= 0.25 * height and box["width"] >= 0.25 * width, (panel, box)
    legend = page.locator(".viewer-side").bounding_box()
    assert legend["x"] + legend["width"] <= width and legend["y"] + legend["height"] <= height
    # Each image fills its panel at the physical aspect ratio of its pixels.
    layout = page.evaluate(
        """() => Object.fromEntries(Object.entries(document.querySelector('#viewer').viewer.views)
             .map(([k, v]) => [k, {...v.layout(), spacing: v.tile.spacing}]))"""
    )
    for panel, box in layout.items():
        physical = box["cols"] * box["spacing"][0] / (box["rows"] * box["spacing"][1])
        assert box["width"] / box["height"] == pytest.approx(physical, rel=0.01), panel
    shot("viewer")


def test_failed_tile_shows_a_message_and_retries(site, page, viewer, console, shot):
    console.expect(r"status of 503|HTTP 503")
    case_id = sorted(_lumbarization_ids())[0]
    failing = {"on": True}

    def handle(route):
        if failing["on"]:
            route.fulfill(
                status=503,
                content_type="application/json",
                body='{"error": "the tile server is busy"}',
            )
        else:
            route.continue_()

    page.route(re.compile(r"/slices/axial/\d+\.png"), handle)
    page.goto(f"{site}/cases/{case_id}/")
    error = page.locator('[data-panel="axial"] [data-role="error"]')
    expect(error).to_be_visible()
    expect(error).to_contain_text("the tile server is busy")
    expect(page.locator('[data-panel="axial"]')).to_have_attribute("data-state", "error")
    shot("tile-error")
    failing["on"] = False
    error.get_by_role("button", name="Retry").click()
    page.wait_for_function("document.body.dataset.viewsReady === 'true'")
    viewer.wait_ready()
    expect(error).to_be_hidden()


def test_stale_tile_requests_are_cancelled_and_shared_ones_kept(site, page, viewer):
    case_id = sorted(_lumbarization_ids())[0]
    viewer.open(f"{site}/cases/{case_id}/")
    requested: list[str] = []
    finished: list[str] = []
    failed: list[str] = []
    page.on("request", lambda r: requested.append(r.url))
    page.on("requestfinished", lambda r: finished.append(r.url))
    page.on("requestfailed", lambda r: failed.append(r.url))
    result = page.evaluate(
        """async () => {
          const { api, store, volume } = document.querySelector("#viewer").viewer;
          const url = (n) => api.sliceUrl("axial", n, { ...store.state, outline: true }, volume);
          // Scrolling fast: each slice's request is abandoned as soon as the next is wanted.
          const outcomes = [];
          let previous = null;
          for (let n = 0; n < 8; n += 1) {
            previous?.abort();
            previous = new AbortController();
            outcomes.push(api.tiles.get(url(n), { signal: previous.signal })
              .then(() => "drawn", (e) => e.name));
          }
          // Two wanting the same tile: one gives up, the other still gets it.
          const a = new AbortController();
          const shared = api.tiles.get(url(20), { signal: a.signal }).catch((e) => e.name);
          const kept = api.tiles.get(url(20)).then((t) => t.blob.size);
          a.abort();
          return {
            outcomes: await Promise.all(outcomes),
            shared: await shared,
            kept: await kept,
            cached: [0, 1, 2, 3, 4, 5, 6].map((n) => api.tiles.entries.has(url(n))),
            lastCached: api.tiles.has(url(7)),
            abandoned: [0, 1, 2, 3, 4, 5, 6].map((n) => new URL(url(n), location.href).href),
            wanted: [7, 20].map((n) => new URL(url(n), location.href).href),
          };
        }"""
    )
    assert result["outcomes"] == ["AbortError"] * 7 + ["drawn"]
    assert result["cached"] == [False] * 7 and result["lastCached"]
    assert result["shared"] == "AbortError" and result["kept"] > 0
    abandoned, wanted = set(result["abandoned"]), set(result["wanted"])
    tiles = abandoned | wanted

    def of_tiles(urls: list[str]) -> list[str]:
        return [url for url in urls if url in tiles]

    # Wait until every tile request sent has ended on the network, one way or the other.
    deadline = time.monotonic() + 10
    while len(of_tiles(finished + failed)) < len(of_tiles(requested)):
        assert time.monotonic() < deadline, (requested, finished, failed)
        page.wait_for_timeout(50)
    # The tiles still wanted arrived over the network, the shared one in one request for both;
    # none failed.
    assert wanted <= set(finished), (wanted, finished)
    assert of_tiles(requested).count(result["wanted"][1]) == 1, requested
    assert not wanted & set(failed), failed
    # An abandoned tile never arrives: it was cancelled on the network, or never sent at all.
    assert not abandoned & set(finished), finished
    assert {u for u in requested if u in abandoned} == abandoned & set(failed), (requested, failed)
    assert set(failed) <= abandoned, failed
