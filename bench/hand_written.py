"""Hand-written speed-ups in ctspine/imaging against the library calls they replace, on a
full-size phantom CT (512 x 512 x ~500 int16) and its tiles, rounds interleaved, medians; the
ratio is library / hand-written (above 1: the hand-written code is faster).

1. ``volume_io.decode_nifti`` (header by ``nib.Nifti1Header``, voxels by ``np.frombuffer`` on the
   ISA-L-decompressed bytes) against ``nibabel.Nifti1Image.from_bytes`` on the same bytes.
2. ``encode.encode_png`` (Sub filter in numpy, ISA-L deflate, chunks by hand) against Pillow's PNG
   writer at compress level 1, for grey tiles and RGB tiles with the label overlay.

Run: .venv/bin/python bench/hand_written.py [--rounds 5]
"""

import argparse
import io
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ctspine.imaging import display  # noqa: E402
from ctspine.imaging.encode import encode_png  # noqa: E402
from ctspine.imaging.overlay import overlay_labels  # noqa: E402
from ctspine.imaging.volume_io import _decompress, decode_nifti, read_volume  # noqa: E402
from ctspine.imaging.windowing import apply_window, window_preset  # noqa: E402
from ctspine.phantom.plan import plan_cases  # noqa: E402
from ctspine.phantom.writer import write_dataset  # noqa: E402


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return (time.perf_counter() - start) * 1000, result


def nibabel_decode(raw: bytes, path: Path) -> np.ndarray:
    image = nib.Nifti1Image.from_bytes(_decompress(raw, path=path))
    return np.asanyarray(image.dataobj.get_unscaled())


def pillow_png(tile: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(tile).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def report(name, hand_ms, library_ms, extra=""):
    hand, library = statistics.median(hand_ms), statistics.median(library_ms)
    print(f"| {name} | {hand:.2f} | {library:.2f} | {library / hand:.2f} |{extra}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ctspine-bench-"))
    try:
        spec = [s for s in plan_cases(24, seed=5, full_size=True) if s.section != "cervical"][0]
        write_dataset(work, [spec])
        image_path, label_path = work / spec.image_relpath, work / spec.label_relpath
        raw = image_path.read_bytes()
        print(f"case {spec.case_id}: {image_path.stat().st_size / 1e6:.0f} MB .nii.gz")
        print()
        print("| | hand-written ms | library ms | library / hand-written |")
        print("|---|---|---|---|")

        decompress, hand, library = [], [], []
        for _ in range(args.rounds):
            decompress.append(timed(lambda: _decompress(raw, path=image_path))[0])
            t, (ours, _, _) = timed(lambda: decode_nifti(raw, path=image_path))
            hand.append(t)
            t, theirs = timed(lambda: nibabel_decode(raw, image_path))
            library.append(t)
            assert np.array_equal(ours, theirs)
            del ours, theirs
        report(
            "decode the .nii.gz to an array (file order)",
            hand,
            library,
            f" decompression alone {statistics.median(decompress):.0f} ms",
        )

        image = read_volume(image_path, kind="image")
        labels = read_volume(label_path, kind="label")
        bone = window_preset("bone")
        tiles = {"grey": [], "RGB with labels": []}
        for plane in display.PLANES:
            count = image.data.shape[display.NORMAL_AXIS[plane]]
            for index in np.linspace(count // 4, 3 * count // 4, 10).astype(int):
                grey = apply_window(
                    display.slice_tile(image.data, plane=plane, index=int(index)),
                    width=bone.width,
                    level=bone.level,
                )
                label_tile = display.slice_tile(labels.data, plane=plane, index=int(index))
                tiles["grey"].append(np.ascontiguousarray(grey))
                tiles["RGB with labels"].append(overlay_labels(grey, label_tile, opacity=0.5))
        for kind, arrays in tiles.items():
            hand, library, sizes = [], [], []
            for _ in range(args.rounds):
                for tile in arrays:
                    t, ours = timed(lambda tile=tile: encode_png(tile))
                    hand.append(t)
                    t, theirs = timed(lambda tile=tile: pillow_png(tile))
                    library.append(t)
                    sizes.append(len(ours) / len(theirs))
            decoded = np.asarray(Image.open(io.BytesIO(encode_png(arrays[0]))))
            assert np.array_equal(decoded, arrays[0])
            report(
                f"PNG of a {arrays[0].shape[1]} x {arrays[0].shape[0]} tile, {kind} "
                f"({len(arrays)} tiles of 3 planes)",
                hand,
                library,
                f" size hand-written / Pillow {statistics.median(sizes):.2f}",
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
