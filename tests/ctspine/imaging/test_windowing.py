"""Window/level to 8-bit grey."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from ctspine.imaging import display
from ctspine.imaging.volume_io import read_volume
from ctspine.imaging.windowing import Window, apply_window, resolve_window, window_preset


def _formula(hu: float, *, width: float, level: float) -> int:
    lower = level - width / 2
    return int(np.floor(np.clip((hu - lower) / width, 0, 1) * 255 + 0.5))


def test_tile_pixel_equals_window_formula_on_nibabel_canonical(sample_dir):
    path = sample_dir / "ts_example_ct_3mm.nii.gz"
    canonical = np.asanyarray(nib.as_closest_canonical(nib.load(path)).dataobj)
    volume = read_volume(path).data
    bone = window_preset("bone")
    tile = apply_window(
        display.slice_tile(volume, plane="coronal", index=50), width=bone.width, level=bone.level
    )
    x, _, z = canonical.shape
    for i, k in [(60, 15), (10, 3), (100, 25), (61, 12)]:
        expected = _formula(float(canonical[i, 50, k]), width=1800, level=400)
        assert tile[z - 1 - k, x - 1 - i] == expected


def test_whole_tile_close_to_float64_formula():
    values = np.arange(-1500, 2500, dtype=np.int16).reshape(40, 100)
    out = apply_window(values, width=400, level=40)
    expected = np.floor(np.clip((values + 160.0) / 400.0, 0, 1) * 255 + 0.5)
    assert out.dtype == np.uint8
    assert np.abs(out.astype(int) - expected).max() <= 1
    assert (out[values <= -160] == 0).all() and (out[values >= 240] == 255).all()


def test_float_input_and_nan():
    out = apply_window(np.array([[np.nan, -1000.0, 1000.0]], dtype=np.float32), width=100, level=0)
    assert out.tolist() == [[0, 0, 255]]


def test_presets():
    assert window_preset("bone") == Window(width=1800, level=400)
    assert window_preset("soft_tissue") == Window(width=400, level=40)
    assert window_preset("lung") == Window(width=1500, level=-600)
    with pytest.raises(ValueError, match="unknown window preset"):
        window_preset("brain")


def test_resolve_window():
    assert resolve_window(preset="lung") == Window(width=1500, level=-600)
    assert resolve_window(width=350, level=50) == Window(width=350, level=50)
    assert resolve_window(preset="bone", level=300) == Window(width=1800, level=300)
    with pytest.raises(ValueError, match="> 0"):
        resolve_window(width=0, level=40)
    with pytest.raises(ValueError, match="> 0"):
        apply_window(np.zeros((2, 2)), width=-5, level=0)
    with pytest.raises(ValueError, match="both width and level"):
        resolve_window(width=400)
    with pytest.raises(ValueError, match="unknown window preset"):
        resolve_window(preset="nope")
