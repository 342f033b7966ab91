"""Which phantom cases exist: their real CTSpine1K ids, splits, curated anomalies, and the grid
each one is rendered on (:class:`PhantomSpec`, :func:`plan_cases`).

Pure module (numpy only). The anatomy that a spec describes is drawn by
:mod:`ctspine.phantom.anatomy`; :mod:`ctspine.phantom.writer` writes cases in the official
CTSpine1K on-disk layout. Case ids are real CTSpine1K ids embedded below, and the
transitional-vertebra ids come from ``ctspine/dataset/anomalies.csv``, so the curated lists and
what the labels imply (L6 present, L5 fused into the sacrum) agree.

Shapes and spacings are in RAS+ order (x toward the patient's Right, y Anterior, z Superior),
whatever the stored orientation; spacings in mm.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ctspine.dataset.layout import DATASET_SOURCES as SOURCES
from ctspine.dataset.layout import image_path, label_path
from ctspine.dataset.metadata import ANOMALIES, SPLITS, CuratedAnomaly
from ctspine.dataset.metadata import curated_anomalies as published_anomalies
from ctspine.labels import LABEL_BY_NAME
from ctspine.phantom.anatomy import anatomy_of, body_extent

# --- the dataset's published names --------------------------------------------------------------

ORIENTATIONS = ("RAS", "LPS")

#: Body section a phantom's field of view covers; each source's scans cover one of them.
SECTIONS = ("cervical", "thoracic", "thoracolumbar", "lumbar")
SECTION_OF_SOURCE = {
    "HNSCC-3DCT-RT": "cervical",  # head and neck radiotherapy planning CT
    "COVID-19": "thoracic",  # chest CT
    "MSD-T10": "thoracolumbar",  # abdominal CT from the liver dome to the pelvis
    "COLONOG": "lumbar",  # CT colonography: lower thorax, abdomen and pelvis
}
# First and last labelled vertebra in each section's field of view (trunk sections cut through
# the first); None: down to the last free lumbar vertebra (L4 if L5 is sacralized, L5, or L6).
_SECTION_SPAN = {
    "cervical": ("C1", "C7"),
    "thoracic": ("T1", "L1"),
    "thoracolumbar": ("T9", None),
    "lumbar": ("T10", None),
}

# --- real CTSpine1K case ids (from the official data_split.txt), none of them in anomalies.csv ---


def _colonog(*numbers: int) -> tuple[str, ...]:
    return tuple(f"1.3.6.1.4.1.9328.50.4.{n:04d}" for n in numbers)


def _covid(*numbers: int) -> tuple[str, ...]:
    return tuple(f"volume-covid19-A-{n:04d}_ct" for n in numbers)


_ID_POOL: dict[tuple[str, str], tuple[str, ...]] = {
    ("COLONOG", "train"): _colonog(1, 2, 3, 5, 6, 7, 8, 9),
    ("COLONOG", "test_public"): _colonog(663, 664, 665, 667)
    + ("CTC-1018399231", "CTC-1038654821", "CTC-1050546075", "CTC-1137132466"),
    ("COLONOG", "test_private"): _colonog(505, 506, 507, 508, 509, 510),
    ("HNSCC-3DCT-RT", "train"): ("HN_P001", "HN_P002", "HN_P003", "HN_P004", "HN_P005", "HN_P007"),
    ("HNSCC-3DCT-RT", "test_public"): ("HN_P023", "HN_P024", "HN_P026", "HN_P027", "HN_P028"),
    ("HNSCC-3DCT-RT", "test_private"): ("HN_P029", "HN_P030", "HN_P032", "HN_P033", "HN_P034"),
    ("MSD-T10", "train"): ("liver_0", "liver_100", "liver_101", "liver_102", "liver_103"),
    ("MSD-T10", "test_public"): ("liver_110", "liver_111", "liver_112", "liver_113", "liver_114"),
    ("MSD-T10", "test_private"): ("liver_165", "liver_167", "liver_169", "liver_170", "liver_171"),
    ("COVID-19", "train"): _covid(3, 11, 13, 14, 16, 25),
    ("COVID-19", "test_public"): _covid(320, 331, 338, 354, 360),
    ("COVID-19", "test_private"): _covid(251, 252, 263, 270, 282),
}

# The default 24-case demo, in an order whose every prefix is as varied as it can be: the first 4
# cover every source, the first 8 every split, the first 14 three cases of each anomaly.
_DEMO_ORDER = (
    "1.3.6.1.4.1.9328.50.4.0001",
    "HN_P001",
    "liver_0",
    "volume-covid19-A-0003_ct",
    "1.3.6.1.4.1.9328.50.4.0004",  # lumbarization
    "1.3.6.1.4.1.9328.50.4.0064",  # sacralization
    "CTC-1018399231",
    "liver_165",
    "1.3.6.1.4.1.9328.50.4.0699",  # lumbarization
    "1.3.6.1.4.1.9328.50.4.0555",  # sacralization
    "HN_P023",
    "volume-covid19-A-0251_ct",
    "liver_106",  # lumbarization
    "liver_83",  # sacralization
    "1.3.6.1.4.1.9328.50.4.0505",
    "HN_P029",
    "volume-covid19-A-0320_ct",
    "liver_110",
    "1.3.6.1.4.1.9328.50.4.0002",
    "1.3.6.1.4.1.9328.50.4.0663",
    "HN_P002",
    "volume-covid19-A-0011_ct",
    "liver_100",
    "1.3.6.1.4.1.9328.50.4.0506",
)


def curated_anomalies() -> dict[str, CuratedAnomaly]:
    """The curated lumbarization/sacralization cases of the 1,005, by case id (the VerSe rows
    belong to the separate Test_VerSe set and are left out)."""
    return {case_id: row for case_id, row in published_anomalies().items() if row.split}


def _catalog() -> dict[str, tuple[str, str]]:
    """Every case id this module can plan: id -> (source, split)."""
    catalog = {case_id: key for key, ids in _ID_POOL.items() for case_id in ids}
    catalog.update({c.case_id: (c.source, c.split) for c in curated_anomalies().values()})
    return catalog


def _plan_order() -> list[str]:
    """The demo's 24 ids, then the rest of the pool round-robin by (source, split), then the
    remaining curated anomaly cases."""
    order = list(_DEMO_ORDER)
    seen = set(order)
    pools = [[i for i in ids if i not in seen] for ids in _ID_POOL.values()]
    for rank in range(max(map(len, pools))):
        order += [pool[rank] for pool in pools if rank < len(pool)]
    order += [i for i in curated_anomalies() if i not in seen]
    return order


# --- case specification -------------------------------------------------------------------------


@dataclass(frozen=True)
class PhantomSpec:
    """Everything that determines one phantom case.

    ``shape`` is (x, y, z) in voxels and ``spacing_mm`` the voxel size in mm along the same axes,
    both in RAS+ order whatever the stored ``orientation`` ("RAS" or "LPS"). The field of view
    starts (lowest slice) at a point of the anatomy chosen by ``section`` and ``seed`` and runs
    ``shape[2]`` slices upward; in-plane it is centred on the body. ``anomaly`` is None,
    "lumbarization" (an L6, label 25, above the sacrum) or "sacralization" (L5 fused into the
    sacrum: no label 24, label-0 bone below L4). ``seed`` fixes the anatomy, tissue values and noise.
    """

    case_id: str
    source: str
    split: str
    section: str
    anomaly: str | None
    shape: tuple[int, int, int]
    spacing_mm: tuple[float, float, float]
    orientation: str = "RAS"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.source not in SOURCES or self.split not in SPLITS or self.section not in SECTIONS:
            raise ValueError(f"bad source/split/section in {self!r}")
        if self.anomaly not in (None, *ANOMALIES) or self.orientation not in ORIENTATIONS:
            raise ValueError(f"bad anomaly/orientation in {self!r}")

    @property
    def image_relpath(self) -> Path:
        """Image path relative to the dataset root: ``data/<folder>/<case>.nii.gz``."""
        return Path(image_path(self.source, self.case_id))

    @property
    def label_relpath(self) -> Path:
        """Label path relative to the dataset root: ``label/<folder>/<case>_seg.nii.gz``."""
        return Path(label_path(self.source, self.case_id))

    @property
    def expected_labels(self) -> tuple[int, ...]:
        """Vertebra label values present in the planned field of view of this section/anomaly."""
        first, last = _SECTION_SPAN[self.section]
        if last is None:
            last = {"lumbarization": "L6", "sacralization": "L4"}.get(self.anomaly, "L5")
        return tuple(range(LABEL_BY_NAME[first].value, LABEL_BY_NAME[last].value + 1))


def max_cases() -> int:
    """How many cases :func:`plan_cases` can plan for one seed."""
    return len(_plan_order())


def plan_cases(n: int = 24, *, seed: int = 0, full_size: bool = False) -> list[PhantomSpec]:
    """Plan ``n`` phantom cases with real CTSpine1K ids, splits and curated anomalies.

    The first 24 are a fixed, varied selection (every source and split, three lumbarization and
    three sacralization cases); larger ``n`` continue with more real ids. Each case's anatomy,
    spacing and orientation depend only on ``seed`` and its id, so a case looks the same whatever
    ``n``. Small cases have 64-128 voxels across and 40-120 slices; ``full_size`` cases are
    512 x 512 with about 440-540 slices (fewer for the short cervical section).
    """
    order = _plan_order()
    if not 1 <= n <= len(order):
        raise ValueError(f"the phantom can plan 1 to {len(order)} cases, not {n}")
    catalog = _catalog()
    curated = curated_anomalies()
    specs = []
    for index, case_id in enumerate(order[:n]):
        source, split = catalog[case_id]
        anomaly = curated[case_id].anomaly if case_id in curated else None
        case_seed = int(
            np.random.SeedSequence([seed, zlib.crc32(case_id.encode())]).generate_state(1)[0]
        )
        # Alternate storage order so that any two consecutive cases exercise both orientations.
        orientation = ORIENTATIONS[index % 2]
        draft = PhantomSpec(
            case_id, source, split, SECTION_OF_SOURCE[source], anomaly, (1, 1, 1), (1.0, 1.0, 1.0),
            orientation, case_seed,
        )  # fmt: skip
        specs.append(_choose_grid(draft, full_size))
    return specs


def _choose_grid(draft: PhantomSpec, full_size: bool) -> PhantomSpec:
    """Pick voxel size and shape so the section's field of view and the whole body fit."""
    anatomy = anatomy_of(draft)
    rng = np.random.default_rng([draft.seed, 2])
    bottom, top = anatomy.fov
    length = top - bottom
    width = body_extent(anatomy, np.linspace(bottom, top, 64))[0]
    if full_size:
        n_xy = 512
        sxy = max(width / n_xy, rng.uniform(0.6, 1.0))
        sz = float(np.clip(length / rng.uniform(440, 540), 0.5, 3.0))
    else:
        # Coarser than a real scan on purpose: 64-128 voxels must span a whole body (~250-400 mm).
        n_xy = int(rng.choice([80, 96, 112] if draft.section == "cervical" else [96, 112, 128]))
        sxy = width * rng.uniform(1.0, 1.12) / n_xy
        low = max(2.5, length / 118)
        sz = rng.uniform(low, max(low, min(5.0, length / 42)))
    sxy, sz = round(float(sxy), 4), round(float(sz), 3)
    n_z = int(np.floor(length / sz + 1e-6)) + 1  # the top slice stays inside the planned top
    return replace(draft, shape=(n_xy, n_xy, n_z), spacing_mm=(sxy, sxy, sz))
