"""Seeded bugs: does the test suite notice what a user would?

Each mutant is one small edit of the source (text replaced exactly, so a mutant that no longer
applies is reported as such instead of passing silently). The script copies the working tree
(tracked and untracked-but-not-ignored files) to a scratch folder, checks that the relevant test
files pass there unmutated, then for each mutant applies its edit, runs its test files, restores
the file and prints one line: killed (a test failed), SURVIVED (all passed), or error.

Not run in CI: it takes a few minutes. Run from the project root:

    .venv/bin/python bench/mutations.py            # all mutants
    .venv/bin/python bench/mutations.py cache-key-ignores-mtime any-none-swapped
    make mutants

The exit status is 1 when a mutant survived or could not be applied.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutant:
    name: str
    what: str  # what a user would see
    path: str
    edits: tuple[tuple[str, str], ...]  # (old, new), each old found exactly once
    tests: tuple[str, ...]


MUTANTS = (
    # --- the five of issue 16 ---------------------------------------------------------------
    Mutant(
        "anomaly-source-ignored",
        "anomaly_source=labels filters by the published list",
        "viewer/models.py",
        (
            (
                'field = "curated_anomaly" if source == "curated" else "label_anomaly"',
                'field = "curated_anomaly"',
            ),
        ),
        ("tests/viewer/test_anomaly_filters.py",),
    ),
    Mutant(
        "any-none-swapped",
        "anomaly=any lists the cases without an anomaly and vice versa",
        "viewer/models.py",
        (
            (
                'if kind == "any":\n            return self.exclude',
                'if kind == "none":\n            return self.exclude',
            ),
            (
                'if kind == "none":\n            return self.filter',
                'if kind == "any":\n            return self.filter',
            ),
        ),
        ("tests/viewer/test_anomaly_filters.py",),
    ),
    Mutant(
        "evaluate-spacing-in-voxels",
        "evaluate reports HD95, ASSD and NSD in voxels (spacing 1 x 1 x 1)",
        "evaluation/case_metrics.py",
        (("spacing_mm=reference.spacing,", "spacing_mm=(1.0, 1.0, 1.0),"),),
        ("tests/evaluation/test_metrics_in_mm.py",),
    ),
    Mutant(
        "job-spacing-in-voxels",
        "a job's metrics in voxels (spacing 1 x 1 x 1)",
        "inference/pipeline.py",
        (
            (
                "reference=reference.data, prediction=labels, spacing_mm=image.spacing",
                "reference=reference.data, prediction=labels, spacing_mm=(1.0, 1.0, 1.0)",
            ),
        ),
        ("tests/inference/test_job_metrics_in_mm.py",),
    ),
    Mutant(
        "cache-key-ignores-mtime",
        "a file re-saved at the same size keeps showing its old pixels",
        "ctspine/volume_cache.py",
        ((r'f"{self.size}\0{self.mtime_ns}"', 'f"{self.size}"'),),
        ("tests/ctspine/test_cache_freshness.py", "tests/viewer/test_tile_freshness.py"),
    ),
    # --- the weak tests of issue 16 -----------------------------------------------------------
    Mutant(
        "sagittal-coronal-left-right-flip",
        "sagittal and coronal tiles mirrored left-right (consistently)",
        "ctspine/imaging/display.py",
        (
            (
                "    return to_display(section(volume, plane=plane, index=index))",
                "    tile = to_display(section(volume, plane=plane, index=index))\n"
                '    return tile if plane == "axial" else tile[:, ::-1]',
            ),
        ),
        ("tests/viewer/test_tile_orientation.py", "tests/viewer/test_tiles_api.py"),
    ),
    Mutant(
        "centroid-voxel-truncated",
        "the legend jumps to a voxel beside the vertebra's centre",
        "viewer/tiles/responses.py",
        (
            (
                "voxel = [int(round(c)) for c in (inverse @ [*centroid, 1.0])[:3]]",
                "voxel = [int(c) for c in (inverse @ [*centroid, 1.0])[:3]]",
            ),
        ),
        ("tests/viewer/test_tile_orientation.py", "tests/viewer/test_tiles_api.py"),
    ),
    Mutant(
        "eviction-acts-on-old-listing",
        "two warm_cache workers: one deletes the other's just-written entry",
        "ctspine/volume_cache.py",
        (
            (
                "if if_last_used is not _ANY and _last_used(directory) != if_last_used:",
                "if False:",
            ),
        ),
        ("tests/ctspine/test_cache_freshness.py",),
    ),
    Mutant(
        "vertebra-filter-first-value-only",
        "vertebra=L1&vertebra=L2 filters by L1 only",
        "viewer/filters.py",
        (
            (
                'values = data.getlist(name) if hasattr(data, "getlist") else [data.get(name)]',
                'values = data.getlist(name)[:1] if hasattr(data, "getlist") else [data.get(name)]',
            ),
        ),
        ("tests/viewer/test_search_api.py",),
    ),
    Mutant(
        "strip-plot-jitter-by-count",
        "every point of a strip-plot column on one vertical line",
        "evaluation/plots.py",
        (
            (
                "Point(round(x + _jitter(case_id), 1)",
                "Point(round(x + _jitter(str(len(cases))), 1)",
            ),
        ),
        ("tests/evaluation/test_table2.py",),
    ),
    Mutant(
        "test-folders-left-behind",
        "every test run leaves a ctspine-test-* folder in /tmp",
        "ctspine_site/settings/test.py",
        (("atexit.register(shutil.rmtree, _TMP, ignore_errors=True)", "pass"),),
        ("tests/test_temporary_folders.py",),
    ),
    # --- more of our own ---------------------------------------------------------------------
    Mutant(
        "disagree-never-shown",
        "the 'disagree' badge never appears",
        "viewer/models.py",
        (
            (
                '"disagree": bool(self.label_stats_done and self.curated_anomaly != self.label_anomaly)',
                '"disagree": False',
            ),
        ),
        ("tests/viewer/test_anomaly_filters.py",),
    ),
    Mutant(
        "label-facets-count-curated",
        "the labels' anomaly facet counts the published list",
        "viewer/facets.py",
        (('derived[der or "none"] += 1', 'derived[cur or "none"] += 1'),),
        ("tests/viewer/test_anomaly_filters.py",),
    ),
    Mutant(
        "spacing-axes-reversed",
        "metrics with the voxel size's axes reversed (k, j, i)",
        "evaluation/case_metrics.py",
        (("spacing_mm=reference.spacing,", "spacing_mm=tuple(reference.spacing)[::-1],"),),
        ("tests/evaluation/test_metrics_in_mm.py",),
    ),
    Mutant(
        "nsd-tolerance-in-voxels",
        "a job's NSD counts distances in voxels against the mm tolerance",
        "ctspine/metrics.py",
        (
            (
                "within = int(np.count_nonzero(pooled <= tolerance * _TOLERANCE_SLACK))",
                "within = int(np.count_nonzero(pooled <= tolerance * 4))",
            ),
        ),
        ("tests/inference/test_job_metrics_in_mm.py", "tests/evaluation/test_metrics_in_mm.py"),
    ),
    Mutant(
        "coronal-readout-flipped",
        "the HU read-out on the coronal view is of the mirrored voxel",
        "ctspine/imaging/display.py",
        (
            (
                'if plane == "coronal":\n        return (x - 1 - col, index, z - 1 - row)',
                'if plane == "coronal":\n        return (col, index, z - 1 - row)',
            ),
        ),
        ("tests/viewer/test_tile_orientation.py",),
    ),
    Mutant(
        "etag-ignores-file-version",
        "a browser keeps a changed file's old tile (304 Not Modified)",
        "viewer/tiles/responses.py",
        (
            (
                'text = "|".join((RENDER_VERSION, version, *parts))',
                'text = "|".join((RENDER_VERSION, *parts))',
            ),
        ),
        ("tests/viewer/test_tile_freshness.py",),
    ),
)


def scratch_copy(destination: Path) -> Path:
    """Copy the working tree's tracked and untracked-but-not-ignored files to ``destination``."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        check=True,
        capture_output=True,
    ).stdout.split(b"\0")
    for name in filter(None, (item.decode() for item in listed)):
        source = REPO / name
        if not source.is_file():  # deleted in the working tree
            continue
        target = destination / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
    return destination


def run_tests(root: Path, tests: tuple[str, ...], timeout_s: int) -> tuple[str, float, str]:
    """("passed" | "failed" | "error", seconds, last output line) of pytest on ``tests``."""
    env = {
        **os.environ,
        # The tests read the shared reference data beside the repository: point them at ours.
        "CTSPINE_SHARED_DIR": os.environ.get("CTSPINE_SHARED_DIR", str(REPO.parent / "shared")),
    }
    env.pop("CTSPINE_CACHE_DIR", None)
    env.pop("CTSPINE_MEDIA_DIR", None)
    command = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider"]
    command += ["-m", "not browser", *tests]
    started = time.perf_counter()
    try:
        done = subprocess.run(
            command, cwd=root, env=env, capture_output=True, text=True, timeout=timeout_s
        )
    except subprocess.TimeoutExpired:
        return "error", time.perf_counter() - started, f"timed out after {timeout_s} s"
    seconds = time.perf_counter() - started
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    last = lines[-1] if lines else done.stderr.strip()[-200:]
    outcome = {0: "passed", 1: "failed"}.get(done.returncode, "error")
    return outcome, seconds, last


def apply(root: Path, mutant: Mutant) -> str | None:
    """Apply ``mutant`` in ``root``; returns the original text, or None if it does not apply."""
    path = root / mutant.path
    original = path.read_text()
    text = original
    for old, new in mutant.edits:
        if text.count(old) != 1:
            return None
        text = text.replace(old, new)
    path.write_text(text)
    return original


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="mutants to run (default: all)")
    parser.add_argument("--timeout", type=int, default=600, help="seconds per test run")
    parser.add_argument("--keep", action="store_true", help="keep the scratch copy")
    args = parser.parse_args()
    known = {m.name: m for m in MUTANTS}
    unknown = [name for name in args.names if name not in known]
    if unknown:
        parser.error(f"unknown mutants: {', '.join(unknown)}; known: {', '.join(known)}")
    mutants = [known[name] for name in args.names] if args.names else list(MUTANTS)

    scratch = Path(tempfile.mkdtemp(prefix="ctspine-mutants-"))
    try:
        root = scratch_copy(scratch / "repo")
        tests = tuple(dict.fromkeys(t for m in mutants for t in m.tests))
        outcome, seconds, last = run_tests(root, tests, args.timeout)
        print(f"baseline (unmutated): {outcome} in {seconds:.0f} s: {last}", flush=True)
        if outcome != "passed":
            print("the tests fail without any mutant: fix them first")
            return 1
        rows = []
        for mutant in mutants:
            original = apply(root, mutant)
            if original is None:
                rows.append((mutant, "NOT APPLIED", 0.0, "the code to mutate was not found"))
            else:
                try:
                    outcome, seconds, last = run_tests(root, mutant.tests, args.timeout)
                finally:
                    (root / mutant.path).write_text(original)
                verdict = {"failed": "killed", "passed": "SURVIVED"}.get(outcome, "error")
                rows.append((mutant, verdict, seconds, last))
            print(f"  {mutant.name}: {rows[-1][1]}", flush=True)
    finally:
        if args.keep:
            print(f"scratch copy kept in {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)

    width = max(len(m.name) for m in mutants)
    print()
    print(f"{'mutant':<{width}}  {'result':<11}  {'s':>4}  what a user would see / tests run")
    for mutant, verdict, seconds, last in rows:
        print(f"{mutant.name:<{width}}  {verdict:<11}  {seconds:>4.0f}  {mutant.what}")
        print(f"{'':<{width}}  {'':<11}  {'':>4}  {' '.join(mutant.tests)}")
        if verdict != "killed":
            print(f"{'':<{width}}  {'':<11}  {'':>4}  {last}")
    killed = sum(verdict == "killed" for _, verdict, _, _ in rows)
    print(f"\n{killed} of {len(rows)} killed")
    return 0 if killed == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
