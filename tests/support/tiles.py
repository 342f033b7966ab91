"""Reading tile responses in tests, and the window formula worked out independently."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def png_pixels(response) -> np.ndarray:
    """The pixels of a 200 PNG tile response."""
    assert response.status_code == 200, response.content[:300]
    return np.asarray(Image.open(io.BytesIO(response.content)))


def window(values, width, level) -> np.ndarray:
    """Grey levels 0-255 of HU ``values`` under window ``width``/``level``, rounded half up."""
    lower = level - width / 2
    return np.floor(np.clip((np.asarray(values, np.float64) - lower) / width, 0, 1) * 255 + 0.5)
