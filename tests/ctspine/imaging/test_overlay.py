"""Label colours, outlines, compositing and the reference-vs-prediction comparison overlay."""

from __future__ import annotations

import numpy as np
import pytest

from ctspine.imaging import overlay
from ctspine.labels import LABEL_BY_VALUE, colour_lut


def _labels() -> np.ndarray:
    tile = np.zeros((12, 14), dtype=np.uint8)
    tile[2:7, 2:9] = 20  # L1: a 5 x 7 block with a 3 x 5 interior
    tile[7:11, 2:9] = 21  # L2 directly below it
    tile[1:4, 10:13] = 8  # T1
    return tile


def test_fill_colours_equal_the_colour_table():
    rgba = overlay.label_rgba(_labels(), opacity=1.0)
    for value in (8, 20, 21):
        assert tuple(rgba[_labels() == value][0]) == (*LABEL_BY_VALUE[value].rgb, 255)
    assert (rgba[_labels() == 0] == 0).all()
    assert np.array_equal(rgba, np.take(colour_lut(), _labels(), axis=0))


def test_opacity_sets_alpha():
    rgba = overlay.label_rgba(_labels(), opacity=0.4)
    assert set(np.unique(rgba[:, :, 3])) == {0, 102}
    with pytest.raises(ValueError, match="opacity"):
        overlay.label_rgba(_labels(), opacity=1.5)


def test_visible_subset():
    rgba = overlay.label_rgba(_labels(), opacity=1.0, visible=[20])
    assert (rgba[_labels() == 20][:, 3] == 255).all()
    assert (rgba[_labels() != 20][:, 3] == 0).all()
    with pytest.raises(ValueError, match="not a vertebra label"):
        overlay.label_rgba(_labels(), visible=[30])


def test_outline_leaves_interior_uncoloured():
    labels = _labels()
    rgba = overlay.label_rgba(labels, opacity=1.0, outline=True)
    alpha = rgba[:, :, 3]
    assert (alpha[3:6, 3:8] == 0).all()  # L1's interior
    assert (alpha[2, 2:9] == 255).all() and (alpha[2:7, 2] == 255).all()  # its border
    assert tuple(rgba[6, 5, :3]) == LABEL_BY_VALUE[20].rgb  # L1 side of the L1/L2 boundary
    assert tuple(rgba[7, 5, :3]) == LABEL_BY_VALUE[21].rgb  # L2 side
    assert (alpha[labels == 0] == 0).all()
    # Hiding L2 makes L1's lower edge a boundary with background, still 1 px wide.
    only_l1 = overlay.label_rgba(labels, opacity=1.0, outline=True, visible=[20])[:, :, 3]
    assert (only_l1[6, 2:9] == 255).all() and (only_l1[7:, :] == 0).all()


def test_composite_blends_only_labelled_pixels():
    grey = np.full((12, 14), 100, dtype=np.uint8)
    rgb = overlay.overlay_labels(grey, _labels(), opacity=0.5)
    assert rgb.shape == (12, 14, 3)
    assert (rgb[_labels() == 0] == 100).all()
    colour = np.array(LABEL_BY_VALUE[20].rgb)
    expected = (colour * 128 + 100 * 127 + 127) // 255
    assert np.array_equal(rgb[4, 4], expected)
    opaque = overlay.overlay_labels(grey, _labels(), opacity=1.0)
    assert tuple(opaque[4, 4]) == LABEL_BY_VALUE[20].rgb


def test_comparison_classes_and_colours():
    reference = np.array([[0, 20, 20, 21, 0]], dtype=np.uint8)
    prediction = np.array([[0, 20, 0, 22, 19]], dtype=np.uint8)
    classes = overlay.comparison_classes(reference, prediction)
    assert classes.tolist() == [
        [overlay.NONE, overlay.AGREEMENT, overlay.MISSED, overlay.MISLABELLED, overlay.EXTRA]
    ]
    rgba = overlay.comparison_rgba(reference, prediction, opacity=1.0)
    assert tuple(rgba[0, 1]) == (*overlay.COMPARISON_COLOURS["agreement"], 255)
    assert tuple(rgba[0, 2]) == (*overlay.COMPARISON_COLOURS["missed"], 255)
    assert tuple(rgba[0, 4]) == (*overlay.COMPARISON_COLOURS["extra"], 255)
    assert tuple(rgba[0, 0]) == (0, 0, 0, 0)
    colours = list(overlay.COMPARISON_COLOURS.values())
    assert len(set(colours)) == len(colours)
    limited = overlay.comparison_classes(reference, prediction, visible=[20])
    assert limited.tolist() == [[0, overlay.AGREEMENT, overlay.MISSED, 0, 0]]


def test_comparison_outline():
    reference = _labels()
    rgba = overlay.comparison_rgba(reference, reference, opacity=1.0, outline=True)
    assert (rgba[3:6, 3:8, 3] == 0).all()
    assert (rgba[2, 2:9, 3] == 255).all()


def _random_tiles(seed: int, shape=(37, 29)) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    grey = rng.integers(0, 256, size=shape, dtype=np.uint8)
    labels = rng.choice([0, 0, 0, 8, 19, 20, 21, 25], size=shape).astype(np.uint8)
    other = rng.choice([0, 0, 19, 20, 22], size=shape).astype(np.uint8)
    return grey, labels, other


@pytest.mark.parametrize("opacity", [0.0, 0.2, 0.5, 0.6, 1.0])
@pytest.mark.parametrize("visible", [None, [20], [8, 21, 25], [3]])
@pytest.mark.parametrize("outline", [False, True])
def test_table_blending_equals_alpha_compositing(opacity, visible, outline):
    grey, labels, other = _random_tiles(int(opacity * 10) + 3 * bool(outline))
    options = {"opacity": opacity, "visible": visible, "outline": outline}
    expected = overlay.composite(grey, overlay.label_rgba(labels, **options))
    assert np.array_equal(overlay.overlay_labels(grey, labels, **options), expected)
    blended = overlay.blend_labels(grey, labels, **options)
    if blended is not grey:  # else nothing is drawn: the grey tile itself, single-channel
        assert blended.shape == grey.shape + (3,)
    assert np.array_equal(_as_rgb(blended), expected)
    compared = overlay.blend_comparison(grey, other, labels, **options)
    expected = overlay.composite(grey, overlay.comparison_rgba(other, labels, **options))
    assert np.array_equal(_as_rgb(compared), expected)


def _as_rgb(tile: np.ndarray) -> np.ndarray:
    return np.repeat(tile[:, :, None], 3, axis=2) if tile.ndim == 2 else tile


def test_blend_keeps_grey_tiles_without_visible_labels():
    grey, labels, _ = _random_tiles(7)
    empty = np.zeros_like(labels)
    assert overlay.blend_labels(grey, empty) is grey
    assert overlay.blend_labels(grey, labels, opacity=0.0) is grey
    assert overlay.blend_labels(grey, labels, visible=[1]) is grey  # C1 is not on this tile
    assert overlay.blend_labels(grey, labels, visible=[20]).shape == grey.shape + (3,)
    assert overlay.blend_comparison(grey, empty, empty) is grey
    corner, full = grey[:6, :6], np.full((6, 6), 20, dtype=np.uint8)
    assert overlay.blend_labels(corner, full, outline=True) is corner  # no boundary on the tile
    with pytest.raises(ValueError, match="not a vertebra label"):
        overlay.blend_labels(grey, labels, visible=[26])
    with pytest.raises(ValueError, match="differ"):
        overlay.blend_labels(grey, labels[:-1])


def test_blend_reads_strided_tiles():
    grey, labels, _ = _random_tiles(11)
    view_grey, view_labels = grey[::-1, ::-1].T, labels[::-1, ::-1].T
    expected = overlay.composite(
        np.ascontiguousarray(view_grey), overlay.label_rgba(np.ascontiguousarray(view_labels))
    )
    assert np.array_equal(overlay.blend_labels(view_grey, view_labels), expected)


def test_render_tile_is_grey_unless_something_is_drawn():
    import io

    from PIL import Image

    from ctspine.imaging.render import DisplayOptions, render_tile
    from ctspine.imaging.windowing import Window, apply_window

    values = np.arange(12 * 14, dtype=np.int16).reshape(12, 14) * 10 - 500
    window = Window(width=1800, level=400)

    def decoded(labels, reference=None, **options) -> np.ndarray:
        encoded = render_tile(
            values=values,
            labels=labels,
            reference=reference,
            options=DisplayOptions(window=window, **options),
        )
        return np.asarray(Image.open(io.BytesIO(encoded.data)))

    grey = apply_window(values, width=1800, level=400)
    assert np.array_equal(decoded(np.zeros((12, 14), np.uint8)), grey)
    assert np.array_equal(decoded(None), grey)
    assert np.array_equal(decoded(_labels(), overlay=False), grey)
    assert np.array_equal(decoded(_labels(), visible=frozenset({1})), grey)
    expected = overlay.composite(grey, overlay.label_rgba(_labels(), opacity=0.5))
    assert np.array_equal(decoded(_labels()), expected)
    assert decoded(_labels(), _labels(), layer="compare").ndim == 3  # all agree: green
    assert np.array_equal(decoded(_labels(), _labels(), layer="reference"), expected)
