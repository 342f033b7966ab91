"""Benchmark a segmentation job through the whole system against nnU-Net called directly.

Same NIfTI file, same model folder, same device, each variant in a fresh process of its own (so
its peak memory is its own), the model loaded once per process and one warm-up run excluded:

- direct: what an nnU-Net user writes for one file in-process: ``SimpleITKIO.read_images``,
  ``nnUNetPredictor.predict_single_npy_array``, ``SimpleITKIO.write_seg`` (``--direct-io
  nibabel``: nnU-Net's ``NibabelIO`` instead, for machines without SimpleITK);
- system: ``POST /api/uploads/`` (streamed to disk, checked: header, full decode, CT check),
  job row and task in the queue (django-tasks-db, SQLite in a temp dir), the db worker's loop,
  the task (claim, heartbeat thread, read, ``VertebraPredictor``, label map, writing the result in
  the stored orientation, centroids) until the job row says succeeded. Not included: HTTP
  transfer and gunicorn (the request goes through Django's test client in the same process).

Peak memory is the process's peak RSS (``ru_maxrss``) after the runs: model, framework and the
largest job. Without ``--image`` a spine phantom of ``--size`` voxels at ``--spacing`` mm is
written (int16 HU, stored LPS); without ``--model-dir`` the tiny test model (2 mm, 64³ patch) is
built, whose network is small: a real model's longer network pass makes the relative overhead
smaller.

Run: ``.venv/bin/python bench/inference.py [--repeats 3] [--size 256 256 160] [--spacing 1.0]``
(``--device cuda`` on a GPU machine; ``--mirroring`` for the accurate mode).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kB


def run_direct(args) -> dict:
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    if args.direct_io == "nibabel":
        from nnunetv2.imageio.nibabel_reader_writer import NibabelIO as ReaderWriter
    else:
        from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO as ReaderWriter

    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(len(os.sched_getaffinity(0)))  # as the system's predictor does
    predictor = nnUNetPredictor(
        tile_step_size=0.5,
        use_gaussian=True,
        use_mirroring=args.mirroring,
        perform_everything_on_device=device.type == "cuda",
        device=device,
        allow_tqdm=False,
    )
    predictor.initialize_from_trained_model_folder(args.model_dir, use_folds=("all",))
    output = Path(args.workdir) / "direct-seg.nii.gz"

    def once() -> float:
        started = time.perf_counter()
        io = ReaderWriter()
        data, properties = io.read_images([args.image])
        segmentation = predictor.predict_single_npy_array(data, properties)
        io.write_seg(segmentation, str(output), properties)
        return time.perf_counter() - started

    once()
    return {"wall_s": [once() for _ in range(args.repeats)], "peak_rss_mb": peak_rss_mb()}


def run_system(args) -> dict:
    os.environ.update(
        CTSPINE_NNUNET_MODEL_DIR=args.model_dir,
        CTSPINE_DEVICE=args.device,
        CTSPINE_NNUNET_MODE="accurate" if args.mirroring else "fast",
        CTSPINE_MEDIA_DIR=str(Path(args.workdir) / "media"),
        CTSPINE_UPLOAD_MAX_MB="100000",
        LOG_LEVEL="WARNING",
    )
    from bench._django import setup_django

    setup_django()
    from django.contrib.auth import get_user_model
    from django_tasks_db.management.commands.db_worker import Worker
    from rest_framework.test import APIClient

    from inference.models import SegmentationJob

    def run_db_worker() -> None:  # ``manage.py db_worker --batch``, in this process
        Worker(
            queue_names=["default"], interval=0, batch=True, backend_name="default",
            startup_delay=False, max_tasks=None, worker_id="bench", excluded_queue_names=[],
        ).run()  # fmt: skip

    client = APIClient()
    client.force_login(get_user_model().objects.create_user("bench"))
    image = Path(args.image)

    def once() -> dict:
        started = time.perf_counter()
        with open(image, "rb") as handle:
            response = client.post("/api/uploads/", {"image": handle}, format="multipart")
        assert response.status_code == 201, response.content
        uploaded = time.perf_counter()
        run_db_worker()
        finished = time.perf_counter()
        job = SegmentationJob.objects.get(pk=response.json()["job"]["id"])
        assert job.status == "succeeded", job.error
        return {
            "wall_s": finished - started,
            "upload_s": uploaded - started,
            "job_s": finished - uploaded,
            "predict_s": job.timings["predict_s"],
        }

    once()
    runs = [once() for _ in range(args.repeats)]
    return {
        "wall_s": [r["wall_s"] for r in runs],
        "upload_s": [r["upload_s"] for r in runs],
        "job_s": [r["job_s"] for r in runs],
        "predict_s": [r["predict_s"] for r in runs],
        "peak_rss_mb": peak_rss_mb(),
    }


def prepare(args, workdir: Path) -> None:
    """Write the phantom image and build the tiny model where none was given."""
    import nibabel as nib
    import numpy as np

    from tests.support.model_folder import build_tiny_model_folder, spine_phantom

    if args.model_dir is None:
        args.model_dir = str(build_tiny_model_folder(workdir / "model"))
    if args.image is None:
        image, _ = spine_phantom(shape=tuple(args.size), seed=1)
        affine = np.diag([-args.spacing, -args.spacing, args.spacing, 1.0])  # stored LPS
        path = workdir / "ct.nii.gz"
        nib.save(nib.Nifti1Image(image[::-1, ::-1, :], affine), path)
        args.image = str(path)


def child(args, variant: str) -> dict:
    command = [
        sys.executable, __file__, "--child", variant, "--image", args.image, "--model-dir",
        args.model_dir, "--workdir", args.workdir, "--repeats", str(args.repeats), "--device",
        args.device, "--direct-io", args.direct_io, *(["--mirroring"] if args.mirroring else []),
    ]  # fmt: skip
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"{variant} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", help="a NIfTI CT (default: a spine phantom)")
    parser.add_argument("--model-dir", help="an nnU-Net v2 model folder (default: tiny model)")
    parser.add_argument("--size", type=int, nargs=3, default=(256, 256, 160))
    parser.add_argument("--spacing", type=float, default=1.0, help="phantom voxel size, mm")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--mirroring", action="store_true", help="test-time mirroring (8x)")
    parser.add_argument(
        "--direct-io",
        choices=("simpleitk", "nibabel"),
        default="simpleitk",
        help="nnU-Net's reader/writer for the direct baseline (nibabel where SimpleITK is absent)",
    )
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    parser.add_argument("--child", choices=("direct", "system"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        result = (run_direct if args.child == "direct" else run_system)(args)
        print(json.dumps(result))
        return

    import nibabel as nib

    with tempfile.TemporaryDirectory(prefix="ctspine-bench-inference-") as tmp:
        args.workdir = tmp
        prepare(args, Path(tmp))
        results = {variant: child(args, variant) for variant in ("direct", "system")}
        header = nib.load(args.image).header
    direct, system = results["direct"], results["system"]
    direct_s, system_s = statistics.median(direct["wall_s"]), statistics.median(system["wall_s"])
    job_s = statistics.median(system["job_s"])
    print(
        f"{Path(args.image).name}: {header.get_data_shape()} {header.get_data_dtype()},"
        f" {tuple(round(float(z), 3) for z in header.get_zooms())} mm; model {Path(args.model_dir).name}"
        f" ({Path(args.model_dir).parent.name}); {args.device}, mirroring"
        f" {'on' if args.mirroring else 'off'}; {args.repeats} runs after a warm-up, medians"
    )
    print(f"{'':44s} {'wall s':>8s} {'min s':>8s} {'peak RSS MB':>12s}")
    rows = [
        ("direct: read + nnUNetPredictor + write", direct["wall_s"], direct["peak_rss_mb"]),
        ("system: upload + queue + worker + task", system["wall_s"], system["peak_rss_mb"]),
        ("  of which the upload request (checks)", system["upload_s"], None),
        ("  of which the job (queue to result)", system["job_s"], None),
        ("  of which nnU-Net inside the job", system["predict_s"], None),
    ]
    for name, values, rss in rows:
        memory = f"{rss:12.0f}" if rss is not None else ""
        print(f"{name:44s} {statistics.median(values):8.2f} {min(values):8.2f} {memory}")
    print(
        f"overhead: whole system {100 * (system_s / direct_s - 1):+.1f}%,"
        f" job alone {100 * (job_s / direct_s - 1):+.1f}% (target under +10%);"
        f" peak memory {system['peak_rss_mb'] - direct['peak_rss_mb']:+.0f} MB"
    )


if __name__ == "__main__":
    main()
