"""Synthetic phantom anatomy: a vertebral column C1 to the sacrum inside a body with organs,
rendered as a CT volume and its vertebra labels (:func:`make_phantom`).

Pure module: numpy and scipy only. What to render (id, section, grid, orientation, seed) is a
:class:`ctspine.phantom.plan.PhantomSpec`; writing a dataset is :mod:`ctspine.phantom.writer`.

Conventions
-----------
- World coordinates are NIfTI scanner coordinates in mm, RAS+: x grows toward the patient's
  Right, y toward Anterior, z toward Superior.
- Volumes are built in RAS+ voxel order, indexed ``[i, j, k]`` along ``[x, y, z]``. An "LPS" case
  stores the same anatomy with axes 0 and 1 reversed and the affine ``diag(-sx, -sy, sz)``, as
  DICOM converters write it, so ``nibabel.as_closest_canonical`` gives back the RAS+ case.
- Images are int16 HU; labels are uint8, 0 background, 1-7 C1-C7, 8-19 T1-T12, 20-25 L1-L6.
  Bone that is not a labelled vertebra (sacrum, a sacralized L5, ribs, pelvis, skull) is label 0.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
from scipy.interpolate import PchipInterpolator

from ctspine.labels import LABEL_BY_NAME

if TYPE_CHECKING:
    from ctspine.phantom.plan import PhantomSpec

# --- anatomy: vertebral column ------------------------------------------------------------------

# Per vertebra: body height, disc height below, body semi-axes (lateral, antero-posterior), spinal
# canal semi-axes, arch (pedicle/lamina) thickness, spinous and transverse process lengths,
# paraspinal muscle semi-axes; all mm. Heights per level (body + disc) run about 15 mm cervical,
# 19-28 mm thoracic, 29-30 mm lumbar.
# fmt: off
_VERTEBRAE: dict[str, tuple[float, ...]] = {
    #       body  disc  rx    ry    crx   cry  arch  spin  trans mrx  mry
    "C1":  (10.0, 3.0,  0.0,  0.0,  0.0,  0.0, 5.0,  0.0,  0.0, 12,  14),  # atlas: see _atlas_template
    "C2":  (16.0, 4.5,  8.0,  8.0,  12.0, 8.0, 4.0,  18.0, 8.0, 12,  14),
    "C3":  (11.0, 4.5,  8.0,  7.5,  12.0, 7.5, 4.0,  12.0, 10.0, 12, 14),
    "C4":  (11.5, 4.5,  8.5,  7.5,  12.5, 7.5, 4.0,  13.0, 10.0, 13, 15),
    "C5":  (11.5, 4.5,  9.0,  8.0,  12.5, 7.5, 4.0,  14.0, 10.0, 13, 15),
    "C6":  (12.0, 4.5,  9.5,  8.0,  12.5, 7.5, 4.0,  16.0, 11.0, 14, 16),
    "C7":  (13.0, 4.5,  10.5, 8.5,  12.0, 7.5, 4.5,  24.0, 12.0, 15, 17),
    "T1":  (15.0, 4.0,  12.0, 10.0, 9.5,  7.5, 5.0,  28.0, 14.0, 16, 19),
    "T2":  (16.0, 4.0,  13.0, 11.0, 8.5,  7.5, 5.0,  30.0, 14.0, 16, 19),
    "T3":  (16.5, 4.0,  13.5, 11.5, 8.0,  7.5, 5.0,  31.0, 14.0, 17, 20),
    "T4":  (17.0, 4.5,  14.0, 12.0, 8.0,  7.5, 5.0,  32.0, 14.0, 17, 20),
    "T5":  (17.5, 4.5,  14.5, 12.5, 8.0,  7.5, 5.0,  32.0, 14.0, 17, 20),
    "T6":  (18.0, 4.5,  15.0, 13.0, 8.0,  7.5, 5.0,  32.0, 14.0, 18, 21),
    "T7":  (18.5, 5.0,  15.5, 13.5, 8.0,  7.5, 5.0,  32.0, 14.0, 18, 21),
    "T8":  (19.0, 5.0,  16.0, 14.0, 8.0,  7.5, 5.0,  31.0, 13.0, 18, 22),
    "T9":  (19.5, 5.5,  17.0, 14.5, 8.0,  7.5, 5.0,  30.0, 13.0, 19, 22),
    "T10": (20.0, 5.5,  18.0, 15.0, 8.5,  7.5, 5.5,  29.0, 12.0, 19, 23),
    "T11": (21.0, 6.0,  19.0, 15.5, 9.0,  7.5, 5.5,  28.0, 10.0, 20, 24),
    "T12": (22.0, 6.5,  20.0, 16.0, 10.0, 8.0, 6.0,  28.0, 8.0,  21, 25),
    "L1":  (21.5, 7.5,  21.0, 16.0, 11.0, 8.0, 6.0,  30.0, 20.0, 22, 26),
    "L2":  (22.0, 8.0,  22.0, 16.5, 11.0, 8.0, 6.0,  31.0, 24.0, 23, 27),
    "L3":  (22.0, 8.0,  23.0, 17.0, 11.0, 8.0, 6.0,  31.0, 28.0, 24, 27),
    "L4":  (22.0, 8.0,  24.0, 17.5, 11.5, 8.0, 6.5,  30.0, 26.0, 24, 27),
    "L5":  (21.5, 8.0,  25.0, 18.0, 12.0, 8.5, 6.5,  26.0, 24.0, 23, 26),
    "L6":  (21.5, 8.0,  25.0, 18.0, 12.0, 8.5, 6.5,  24.0, 22.0, 22, 25),
}
# fmt: on
_LABEL_OF = {name: LABEL_BY_NAME[name].value for name in _VERTEBRAE}  # C1=1 ... L6=25
_SACRUM_HEIGHT = 100.0  # mm, S1 endplate to sacral tip; the coccyx adds _COCCYX below
_COCCYX = 25.0


@dataclass(frozen=True)
class _Level:
    """One vertebra (or the sacrum) and the disc below it; z in world mm (superior = +), sizes
    in mm as in the _VERTEBRAE table (semi-axes for rx/ry, crx/cry, mrx/mry)."""

    name: str  # "C1" ... "L6", or "S" for the sacrum
    label: int  # label value written for its bone; 0 for a fused L5 and the sacrum
    kind: str  # "atlas", "vertebra", "fused" (a sacralized L5) or "sacrum"
    top: float  # upper endplate
    body_bottom: float  # lower endplate
    bottom: float  # bottom of the disc below = the next level's top
    rx: float = 0.0  # vertebral body, lateral
    ry: float = 0.0  # vertebral body, antero-posterior
    crx: float = 0.0  # spinal canal
    cry: float = 0.0
    arch: float = 0.0  # pedicle and lamina thickness
    spin: float = 0.0  # spinous process length
    trans: float = 0.0  # transverse process length
    mrx: float = 0.0  # paraspinal muscles
    mry: float = 0.0

    @property
    def cord(self) -> bool:
        """The spinal cord ends at about L1-L2; below, the canal holds CSF and nerve roots."""
        return self.label != 0 and _LABEL_OF.get(self.name, 99) <= 20


def _column(anomaly: str | None, rng: np.random.Generator) -> list[_Level]:
    """The vertebral column C1 to the sacrum, top down, with per-case size jitter.

    z is chosen so that the upper endplate of the sacrum (S1) is at 0 mm.
    """
    names = [n for n in _VERTEBRAE if n != "L6" or anomaly == "lumbarization"]
    scale = rng.uniform(0.94, 1.06)
    levels, z = [], 0.0
    for name in names:
        size = scale * rng.uniform(0.97, 1.03)
        body, disc, *sizes = (v * size for v in _VERTEBRAE[name])
        fused = anomaly == "sacralization" and name == "L5"
        kind = "atlas" if name == "C1" else "fused" if fused else "vertebra"
        label = 0 if fused else _LABEL_OF[name]
        levels.append(_Level(name, label, kind, z, z - body, z - body - disc, *sizes))
        z -= body + disc
    height = _SACRUM_HEIGHT * scale
    levels.append(_Level("S", 0, "sacrum", z, z - height, z - height - _COCCYX))
    shift = -z  # S1 endplate at z = 0
    return [
        replace(
            lv, top=lv.top + shift, body_bottom=lv.body_bottom + shift, bottom=lv.bottom + shift
        )
        for lv in levels
    ]


# --- anatomy: the whole phantom -----------------------------------------------------------------


@dataclass(frozen=True)
class _Blob:
    """An organ or label-0 bone: an ellipsoid (or a vertical cylinder) drawn into axial slices.

    ``cx`` is mm from the midline (+ = patient's right); ``cy`` mm anterior of the body centre
    (anchor "body") or of the vertebral body centre (anchor "spine"); ``rx``, ``ry`` are its
    largest semi-axes in mm; it spans world z from ``top`` down to ``bottom`` (mm).
    """

    cx: float
    cy: float
    rx: float
    ry: float
    top: float
    bottom: float
    hu: float
    anchor: str = "body"
    cylinder: bool = False  # constant cross-section from top to bottom
    angle: float = 0.0  # rotation in the axial plane, radians
    half: str | None = None  # keep only the "anterior" or "posterior" half (of the blob itself)

    def scale(self, z: float) -> float:
        """Cross-section size at height z relative to the largest (0 outside the blob)."""
        if not self.bottom <= z <= self.top:
            return 0.0
        if self.cylinder:
            return 1.0
        half = (self.top - self.bottom) / 2
        return float(np.sqrt(max(0.0, 1.0 - ((z - self.bottom - half) / half) ** 2)))


@dataclass(frozen=True)
class _Tissue:
    """Tissue values of one case, HU."""

    cortex: float
    marrow: float
    posterior: float  # pedicles, laminae, processes: thin bone, nearly all cortex
    disc: float
    muscle: float
    fat: float
    soft: float
    lung: float
    blood: float
    noise: float  # standard deviation of the image noise


@dataclass(frozen=True)
class _Anatomy:
    levels: tuple[_Level, ...]
    fov: tuple[float, float]  # planned (bottom, top) of the field of view, world z mm
    tissue: _Tissue
    blobs: tuple[_Blob, ...]
    profile_z: np.ndarray  # body outline control points: z ascending
    profile: np.ndarray  # (len(profile_z), 4): semi-axes a (lateral), b (AP), spine-to-back, fat
    curve: PchipInterpolator  # sagittal curve: mm anterior of the column axis, as a function of z
    scoliosis: float  # mm, lateral bow of the thoracolumbar column
    ribs: tuple[float, ...]  # z of the costovertebral joints T12 ... T1 (ascending)

    def level(self, name: str) -> _Level:
        return next(lv for lv in self.levels if lv.name == name)

    def y_spine(self, z: np.ndarray) -> np.ndarray:
        """World y (mm) of the vertebral body centres at heights z."""
        zc = np.clip(z, self.curve.x[0], self.curve.x[-1])
        return self.curve(zc)

    def x_spine(self, z: np.ndarray) -> np.ndarray:
        """World x (mm) of the vertebral body centres: a gentle lateral bow, T1 to L5."""
        t1, l5 = self.level("T1").top, self.level("L4").bottom
        phase = np.clip((np.asarray(z, float) - l5) / (t1 - l5), 0.0, 1.0)
        return self.scoliosis * np.sin(np.pi * phase)

    def outline(self, z: np.ndarray) -> np.ndarray:
        """Body outline at heights z: columns a, b, back (spine centre to skin), fat; mm."""
        z = np.atleast_1d(np.asarray(z, float))
        return np.stack([np.interp(z, self.profile_z, col) for col in self.profile.T], axis=-1)

    def y_body(self, z: np.ndarray) -> np.ndarray:
        """World y (mm) of the body outline's centre: the back follows the spine's curve."""
        out = self.outline(z)
        return self.y_spine(z) - out[:, 2] + out[:, 1]


def anatomy_of(spec: PhantomSpec) -> _Anatomy:
    """The phantom's anatomy for a case: deterministic in (seed, section, anomaly, source)."""
    rng = np.random.default_rng([spec.seed, 1])
    levels = tuple(_column(spec.anomaly, rng))
    by = {lv.name: lv for lv in levels}
    tissue = _tissue(spec.source, rng)
    profile_z, profile = _body_profile(by, rng)
    curve = _sagittal_curve(by, rng)
    ribs = tuple(sorted((by[f"T{i}"].top + by[f"T{i}"].body_bottom) / 2 for i in range(1, 13)))
    anatomy = _Anatomy(
        levels, (0.0, 0.0), tissue, (), profile_z, profile, curve, rng.uniform(-4, 4), ribs
    )
    blobs = _organs(anatomy, spec.source, rng)
    return replace(anatomy, blobs=tuple(blobs), fov=_field_of_view(spec.section, by, rng))


def _tissue(source: str, rng: np.random.Generator) -> _Tissue:
    contrast = source == "MSD-T10"  # the liver challenge scans are portal-venous phase
    cortex = rng.uniform(1000, 1200)
    return _Tissue(
        cortex=cortex,
        marrow=rng.uniform(220, 290),
        posterior=cortex * rng.uniform(0.75, 0.85),
        disc=rng.uniform(70, 95),
        muscle=rng.uniform(45, 55),
        fat=rng.uniform(-110, -90),
        soft=rng.uniform(35, 45),
        lung=rng.uniform(-870, -820),
        blood=rng.uniform(170, 220) if contrast else rng.uniform(38, 48),
        noise=rng.uniform(6, 12),
    )


def _body_profile(by: dict[str, _Level], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Body outline control points, z ascending: a, b (lateral and AP semi-axes), back (vertebral
    body centre to the skin of the back) and fat (subcutaneous fat thickness); all mm."""
    h = rng.uniform(0.9, 1.1)  # habitus
    mid = {name: (lv.top + lv.body_bottom) / 2 for name, lv in by.items()}
    s1 = by["S"].top
    # The skin of the back comes closer to the spine along the sacrum, which sweeps backward, so
    # that the pelvis stays in line with the abdomen.
    points = [  # z, a, b, back, fat
        (by["S"].bottom - 40, 172 * h, 108 * h, 40, 22 * h),
        (s1 - 100, 172 * h, 108 * h, 45, 22 * h),
        (s1 - 50, 170 * h, 108 * h, 65, 22 * h),
        (s1 - 10, 165 * h, 110 * h, 84, 21 * h),
        (mid["L4"], 152 * h, 112 * h, 88, 20 * h),
        (by["T11"].bottom, 158 * h, 108 * h, 84, 12 * h),
        (mid["T2"], 158 * h, 108 * h, 84, 12 * h),
        (mid["C7"], 58, 55, 60, 6),
        (mid["C3"], 62, 66, 60, 6),  # upper neck and floor of the mouth
        (by["C1"].top + 12, 72, 86, 70, 5),  # head
        (by["C1"].top + 200, 72, 86, 70, 5),
    ]
    table = np.array(points, float)
    return table[:, 0], table[:, 1:]


def _sagittal_curve(by: dict[str, _Level], rng: np.random.Generator) -> PchipInterpolator:
    """Cervical lordosis, thoracic kyphosis, lumbar lordosis and the sacrum's backward sweep."""
    depth = rng.uniform(0.7, 1.3)
    mid = {name: (lv.top + lv.body_bottom) / 2 for name, lv in by.items()}
    s1 = by["S"].top
    points = [
        (s1 - 140, -62),
        (s1 - 100, -50),
        (s1 - 50, -24),
        (s1, -4),
        (mid["L5"], 6),
        (mid["L3"], 12),
        (mid["L1"], 0),
        (mid["T11"], -6),
        (mid["T7"], -16),
        (mid["T3"], -8),
        (mid["C7"], 2),
        (mid["C4"], 14),
        (by["C1"].top, 6),
        (by["C1"].top + 200, 6),
    ]
    z = np.array([p[0] for p in points])
    return PchipInterpolator(z, depth * np.array([p[1] for p in points], float))


def _field_of_view(
    section: str, by: dict[str, _Level], rng: np.random.Generator
) -> tuple[float, float]:
    """(bottom, top) world z of a section's field of view, mm.

    Trunk sections start inside the first vertebra's body (a cut vertebra, as in real scans) so
    the vertebra above never shows; the lumbar sections end well inside the sacrum, at least
    45 mm below S1 (so a sacralized L5 cannot be mistaken for a cut field of view).
    """

    def inside_body(name: str, low: float, high: float) -> float:
        lv = by[name]
        return lv.top - rng.uniform(low, high) * (lv.top - lv.body_bottom)

    if section == "cervical":
        c7 = by["C7"]
        bottom = c7.body_bottom - rng.uniform(0.3, 0.7) * (c7.body_bottom - c7.bottom)
        return bottom, by["C1"].top + rng.uniform(12, 30)
    if section == "thoracic":
        return inside_body("L1", 0.3, 0.7), inside_body("T1", 0.3, 0.6)
    if section == "thoracolumbar":
        return by["S"].top - rng.uniform(45, 75), inside_body("T9", 0.3, 0.6)
    return by["S"].top - rng.uniform(70, 100), inside_body("T10", 0.3, 0.6)


def _organs(anatomy: _Anatomy, source: str, rng: np.random.Generator) -> list[_Blob]:
    """Organs and label-0 bones, in drawing order (later ones cover earlier ones)."""
    by = {lv.name: lv for lv in anatomy.levels}
    mid = {name: (lv.top + lv.body_bottom) / 2 for name, lv in by.items()}
    t = anatomy.tissue
    a, b = anatomy.outline(mid["T7"])[0, :2]  # chest semi-axes
    aa, ba = anatomy.outline(mid["L3"])[0, :2]  # abdomen semi-axes
    s1, c1, jaw = by["S"].top, by["C1"].top, by["C2"].top
    apex, dome = by["T1"].top + 20, mid["T10"]  # lung apex and diaphragm dome
    ry_l1 = by["L1"].ry
    kidney_x, psoas_x = by["L1"].rx + 45, by["L3"].rx + 18
    psoas_h = by["L1"].top - by["L5"].bottom
    renal = 30 + (t.blood - 43) * 0.6  # kidneys and liver enhance with contrast
    liver = 60 + (t.blood - 43) * 0.3
    chest = [  # lungs (the right one is shorter: the liver lifts the diaphragm)
        _Blob(0.5 * a, -0.05 * b, 0.34 * a, 0.72 * b, apex, dome + 16, t.lung),
        _Blob(-0.5 * a, -0.05 * b, 0.34 * a, 0.72 * b, apex, dome - 8, t.lung),
    ]
    if source == "COVID-19":  # ground-glass opacities, well inside the lungs
        for _ in range(int(rng.integers(3, 7))):
            side, r = rng.choice([-1.0, 1.0]), rng.uniform(10, 22)
            x, y = side * (0.5 + rng.uniform(-0.1, 0.1)) * a, rng.uniform(-0.4, 0.3) * b
            z = rng.uniform(dome + 0.25 * (apex - dome), apex - 0.25 * (apex - dome))
            hu = rng.uniform(-550, -400)
            chest.append(_Blob(x, y, r, r * rng.uniform(0.7, 1.0), z + r, z - r, hu))
    chest += [  # heart (to the patient's left), sternum
        _Blob(-0.12 * a, 0.32 * b, 52, 42, mid["T8"] + 55, mid["T8"] - 55, t.blood * 0.3 + 28),
        _Blob(0.0, 0.85 * b, 16, 6, by["T1"].top, mid["T9"], 450),
    ]
    vessels_and_airway = [  # pharynx, trachea down to the carina, descending aorta
        _Blob(0.0, 22.0, 13, 7, c1, mid["C4"], -1000, "spine", cylinder=True),
        _Blob(0.0, 24.0, 8, 8, mid["C5"], mid["T4"], -1000, "spine", cylinder=True),
        _Blob(-18.0, ry_l1 + 10, 11, 11, mid["T4"], mid["L4"], t.blood, "spine", cylinder=True),
    ]
    abdomen = [  # liver (patient's right = +x), spleen, kidneys, bladder
        _Blob(0.45 * aa, 0.1 * ba, 0.42 * aa, 0.7 * ba, dome + 20, dome - 170, liver),
        _Blob(-0.55 * aa, -0.2 * ba, 0.18 * aa, 0.33 * ba, mid["T11"] + 55, mid["T11"] - 55, 50),
        _Blob(kidney_x, 5.0, 27, 24, by["L2"].top + 52, by["L2"].top - 52, renal, "spine"),
        _Blob(-kidney_x, 5.0, 27, 24, mid["L1"] + 52, mid["L1"] - 52, renal, "spine"),
        _Blob(0.0, 0.5 * ba, 45, 35, s1 - 60, s1 - 130, 10),
    ]
    if source == "COLONOG":  # CT colonography: the colon is distended with air
        abdomen += [
            _Blob(0.6 * aa, 0.15 * ba, 24, 24, mid["L1"], mid["L5"], -1000, cylinder=True),
            _Blob(-0.62 * aa, 0.0, 20, 20, mid["T12"], mid["L5"], -1000, cylinder=True),
            _Blob(0.0, 0.55 * ba, 0.5 * aa, 22, mid["L2"] + 18, mid["L2"] - 18, -1000),
            _Blob(0.0, 45.0, 22, 18, s1 - 20, s1 - 100, -1000, "spine"),
        ]
    wing = np.arctan2(60, 70)  # iliac wings run forward and outward from the sacroiliac joints
    muscles_and_bones = [  # psoas (widening downward), iliac wings
        _Blob(psoas_x, 8.0, 22, 22, by["L1"].top, by["L5"].bottom - psoas_h, t.muscle, "spine"),
        _Blob(-psoas_x, 8.0, 22, 22, by["L1"].top, by["L5"].bottom - psoas_h, t.muscle, "spine"),
        _Blob(85, 20.0, 50, 5, s1 + 60, s1 - 100, 700, "spine", angle=wing),
        _Blob(-85, 20.0, 50, 5, s1 + 60, s1 - 100, 700, "spine", angle=np.pi - wing),
        # head and neck: occipital bone behind the foramen magnum, mandible in front
        _Blob(0.0, -12.0, 52, 52, c1 + 118, c1 + 2, 1100, "spine", half="posterior"),
        _Blob(0.0, -12.0, 45, 45, c1 + 118, c1 + 2, 35, "spine", half="posterior"),
        _Blob(0.0, 28.0, 40, 36, jaw + 26, jaw - 26, 1100, "spine", half="anterior"),
        _Blob(0.0, 28.0, 33, 29, jaw + 26, jaw - 26, t.soft, "spine", half="anterior"),
    ]
    return chest + vessels_and_airway + abdomen + muscles_and_bones


def body_extent(anatomy: _Anatomy, z: np.ndarray) -> tuple[float, float]:
    """(in-plane field of view needed in mm, y of its centre) for slices at heights z."""
    out = anatomy.outline(z)
    yb = anatomy.y_body(z)
    front, back = float(np.max(yb + out[:, 1])), float(np.min(yb - out[:, 1]))
    lateral = 2 * float(np.max(out[:, 0] + np.abs(anatomy.x_spine(z))))
    return max(lateral, front - back) + 30.0, (front + back) / 2


# --- drawing ------------------------------------------------------------------------------------

# Materials of the spine templates; 0 = leave the background as it is.
_NONE, _MUSCLE, _CSF, _CORD, _DISC, _CORTEX, _MARROW, _POSTERIOR = range(8)
_ENDPLATE_MM = 1.2  # cortical endplate thickness
_RIB_HALF_HEIGHT = 5.0  # mm, half the height of a rib's cross-section
_RIB_DROP = 70.0  # mm, how far a rib descends from the spine to its front end


def _ellipse(X, Y, cx, cy, rx, ry):
    """Mask of an axis-aligned ellipse on broadcastable coordinate arrays (mm)."""
    return ((X - cx) / rx) ** 2 + ((Y - cy) / ry) ** 2 <= 1.0


def _rect(X, Y, x0, x1, y0, y1):
    return (X >= x0) & (X <= x1) & (Y >= y0) & (Y <= y1)


def _paint(img, gx, gy, cx, cy, rx, ry, value, angle=0.0, half=None, within=None) -> None:
    """Set the pixels of a (rotated) ellipse in a 2D slice; gx, gy: ascending world mm per index;
    ``within``: optional mask of the slice the ellipse is clipped to.

    Works on the ellipse's bounding box only, which keeps organ drawing cheap on 512 x 512 slices.
    """
    reach_x, reach_y = (max(rx, ry), max(rx, ry)) if angle else (rx, ry)
    i0, i1 = np.searchsorted(gx, [cx - reach_x, cx + reach_x])
    j0, j1 = np.searchsorted(gy, [cy - reach_y, cy + reach_y])
    if i0 >= i1 or j0 >= j1:
        return
    X = gx[i0:i1, None] - cx
    Y = gy[None, j0:j1] - cy
    if angle:
        X, Y = X * np.cos(angle) + Y * np.sin(angle), -X * np.sin(angle) + Y * np.cos(angle)
    mask = (X / rx) ** 2 + (Y / ry) ** 2 <= 1.0
    if half is not None:
        y_rel = gy[None, j0:j1] - cy
        mask &= (y_rel > 0) if half == "anterior" else (y_rel < 0)
    if within is not None:
        mask &= within[i0:i1, j0:j1]
    img[i0:i1, j0:j1][mask] = value


@dataclass
class _Grid:
    """Voxel centres in world mm (RAS+), ascending along each axis."""

    x: np.ndarray
    y: np.ndarray
    z: np.ndarray

    @property
    def spacing(self) -> tuple[float, float, float]:
        return tuple(float(v[1] - v[0]) if len(v) > 1 else 1.0 for v in (self.x, self.y, self.z))


def _grid(spec: PhantomSpec, anatomy: _Anatomy) -> _Grid:
    nx, ny, nz = spec.shape
    sx, sy, sz = spec.spacing_mm
    z = anatomy.fov[0] + sz * np.arange(nz)
    _, y_centre = body_extent(anatomy, z)
    x = sx * (np.arange(nx) - (nx - 1) / 2)
    y = y_centre + sy * (np.arange(ny) - (ny - 1) / 2)
    return _Grid(x, y, z)


def _background(anatomy: _Anatomy, grid: _Grid, z: float) -> tuple[np.ndarray, tuple | None]:
    """Axial slice without the spine at height z: air, body, organs, label-0 bones (int16 HU).

    Also returns the chest-wall ring pixels (i, j, angle from the back) where ribs may run.
    """
    t = anatomy.tissue
    img = np.full((len(grid.x), len(grid.y)), -1000, np.int16, order="F")
    a, b, _, fat = anatomy.outline(z)[0]
    yb = float(anatomy.y_body(z)[0])
    xs, ys = float(anatomy.x_spine(z)), float(anatomy.y_spine(z))
    _paint(img, grid.x, grid.y, 0.0, yb, a, b, t.fat)
    _paint(img, grid.x, grid.y, 0.0, yb, a - fat, b - fat, t.soft)
    inside = img == np.int16(t.soft)  # organs stay under the subcutaneous fat
    for blob in anatomy.blobs:
        if (scale := blob.scale(z)) <= 0.0:
            continue
        cx, cy = (blob.cx, blob.cy + yb) if blob.anchor == "body" else (blob.cx + xs, blob.cy + ys)
        rx, ry = blob.rx * scale, blob.ry * scale
        _paint(img, grid.x, grid.y, cx, cy, rx, ry, blob.hu, blob.angle, blob.half, inside)
    return img, _rib_ring(anatomy, grid, z, a - fat - 9, b - fat - 9, yb)


def _rib_ring(anatomy: _Anatomy, grid: _Grid, z: float, ra: float, rb: float, yb: float):
    """Pixels of the chest wall's ring (i, j, angle from the back in radians) at height z."""
    if not anatomy.ribs[0] - _RIB_DROP - 10 <= z <= anatomy.ribs[-1] + 10:
        return None
    X, Y = grid.x[:, None], grid.y[None, :] - yb
    ring = _ellipse(X, Y, 0, 0, ra + 3, rb + 3) & ~_ellipse(X, Y, 0, 0, ra - 3, rb - 3)
    i, j = np.nonzero(ring)
    angle = np.arctan2(np.abs(grid.x[i]), -(grid.y[j] - yb))  # 0 at the back, pi at the front
    return i, j, angle


def _draw_ribs(sl: np.ndarray, ring, ribs: np.ndarray, z: float, hu: float) -> None:
    """Ribs cut by the slice at height z: each rib leaves its vertebra at the back and runs
    forward and down, so an axial slice shows a few short arcs, as in a real chest CT."""
    i, j, angle = ring
    start, end = 0.2 * np.pi, 0.82 * np.pi
    z_at_spine = z + _RIB_DROP * np.clip((angle - start) / (end - start), 0.0, 1.0)
    k = np.clip(np.searchsorted(ribs, z_at_spine), 1, len(ribs) - 1)
    nearest = np.where(np.abs(ribs[k] - z_at_spine) < np.abs(ribs[k - 1] - z_at_spine), k, k - 1)
    # ribs[0] is T12's (ascending z): the 11th and 12th ribs are short, floating ones
    reach = np.where(nearest <= 1, 0.5 * np.pi, end)
    on = (
        (np.abs(ribs[nearest] - z_at_spine) <= _RIB_HALF_HEIGHT)
        & (angle >= start)
        & (angle <= reach)
    )
    sl[i[on], j[on]] = hu


# --- spine templates (axial cross-sections of one level, centred on its vertebral body) --------


@dataclass
class _Box:
    """Local template grid around a vertebral body centre: X lateral, Y anterior, mm."""

    X: np.ndarray  # (w, 1)
    Y: np.ndarray  # (1, h)
    ci: int  # index of the body centre along X
    cj: int  # along Y
    cortex: float  # cortical shell thickness drawn, mm (at least about a voxel, so it shows)


def _box(sx: float, sy: float) -> _Box:
    half_w, back, front = 62.0, 92.0, 26.0
    ci, cj = int(np.ceil(half_w / sx)), int(np.ceil(back / sy))
    X = (np.arange(2 * ci + 1) - ci)[:, None] * sx
    Y = (np.arange(cj + int(np.ceil(front / sy)) + 1) - cj)[None, :] * sy
    return _Box(X, Y, ci, cj, max(1.5, 0.8 * max(sx, sy)))


def _cancellous(mat: np.ndarray, box: _Box, shapes) -> np.ndarray:
    """Draw bones made of (cx, cy, rx, ry) ellipses as cortex shells filled with marrow; the
    shells of overlapping ellipses merge. Returns the union mask."""
    X, Y, c = box.X, box.Y, box.cortex
    outer = np.zeros(mat.shape, bool)
    inner = np.zeros(mat.shape, bool)
    for cx, cy, rx, ry in shapes:
        outer |= _ellipse(X, Y, cx, cy, rx, ry)
        inner |= _ellipse(X, Y, cx, cy, max(rx - c, 0.1), max(ry - c, 0.1))
    mat[outer] = _CORTEX
    mat[inner] = _MARROW
    return outer


def _vertebra_template(lv: _Level, zone: str, below: _Level, box: _Box):
    """Materials and labels of a vertebra's cross-section in one of its zones.

    Zones, top down: "pedicle" (body and pedicles, the canal open behind), "transverse" (body,
    closed neural arch, transverse processes), "lamina" (body, laminae and spinous process),
    "disc" (the disc, with this vertebra's laminae, facets and spinous process behind it).
    """
    X, Y = box.X, box.Y
    mat = np.zeros((X.shape[0], Y.shape[1]), np.uint8)
    yc = -(lv.ry + lv.cry - 1.0)  # canal centre: its front is the body's back wall
    for side in (-1, 1):
        mx = side * (0.4 * lv.crx + lv.mrx)
        mat[_ellipse(X, Y, mx, yc - lv.cry - lv.arch - 0.35 * lv.mry, lv.mrx, lv.mry)] = _MUSCLE
    canal = _ellipse(X, Y, 0, yc, lv.crx, lv.cry)
    ring = _ellipse(X, Y, 0, yc, lv.crx + lv.arch, lv.cry + lv.arch) & ~canal
    mat[canal] = _CSF
    if lv.cord:
        mat[_ellipse(X, Y, 0, yc, 0.55 * lv.crx, 0.6 * lv.cry)] = _CORD
    spinous_w = max(2.5, 0.6 * float(X[1, 0] - X[0, 0]))
    back = yc - lv.cry - lv.arch
    # The arch closes behind the canal only below the pedicles' top, and the spinous process hangs
    # from its lower part: mid-sagittal views show separate spinous processes with gaps between.
    if zone == "pedicle":
        posterior = ring & (Y > yc - 0.3 * lv.cry)
    elif zone == "transverse":
        posterior = ring.copy()
    else:
        posterior = (ring & (Y < yc)) | _rect(X, Y, -spinous_w, spinous_w, back - lv.spin, back + 1)
    if zone == "transverse":
        reach = lv.crx + lv.arch + lv.trans
        posterior |= _rect(np.abs(X), Y, lv.crx, reach, yc - 1 - max(4.0, box.cortex), yc - 1 + 4)
    if zone == "disc":
        for side in (-1, 1):  # articular processes and facet joints
            posterior |= _ellipse(
                X, Y, side * (lv.crx + 0.5 * lv.arch), yc + 1, 0.9 * lv.arch, 1.2 * lv.arch + 1
            )
    if zone == "disc" and lv.kind != "fused":
        rx, ry = (lv.rx + (below.rx or lv.rx)) / 2 + 1, (lv.ry + (below.ry or lv.ry)) / 2 + 1
        mat[_ellipse(X, Y, 0, 0, rx, ry)] = _DISC
        bone = np.zeros(mat.shape, bool)
    else:  # the body; a sacralized L5 has broad alae and a bony disc space, like the sacrum's
        shapes = [(0.0, 0.0, lv.rx, lv.ry)]
        if lv.kind == "fused":
            shapes.append((0.0, yc * 0.6, 50.0, 13.0))
        drawn = mat.copy()
        bone = _cancellous(drawn, box, shapes)
        mat[bone] = drawn[bone]
    mat[posterior & ~bone] = _POSTERIOR
    lab = np.where((mat >= _CORTEX) & (bone | posterior), lv.label, 0).astype(np.uint8)
    return mat, lab


def _atlas_template(lv: _Level, zone: str, box: _Box):
    """C1: a bony ring with lateral masses around the dens of C2 (labelled 2), no body."""
    X, Y = box.X, box.Y
    mat = np.zeros((X.shape[0], Y.shape[1]), np.uint8)
    for side in (-1, 1):
        mat[_ellipse(X, Y, side * (5 + lv.mrx), -34, lv.mrx, lv.mry)] = _MUSCLE
    inner = _ellipse(X, Y, 0, -14, 19, 20)
    mat[inner] = _CSF
    mat[_ellipse(X, Y, 0, -20, 8, 6)] = _CORD
    dens = _ellipse(X, Y, 0, 0, 5.5, 5.5)
    mat[dens] = _MARROW
    ring = np.zeros(mat.shape, bool)
    if zone != "disc":
        ring = _ellipse(X, Y, 0, -14, 24, 25) & ~inner
        for side in (-1, 1):
            ring |= _ellipse(X, Y, side * 15, -6, 6.5, 8.5)  # lateral masses
        ring |= _rect(np.abs(X), Y, 20, 38, -10, -2)  # transverse processes
        mat[ring] = _POSTERIOR
    lab = np.zeros(mat.shape, np.uint8)
    lab[ring] = _LABEL_OF["C1"]
    lab[dens] = _LABEL_OF["C2"]
    return mat, lab


def _sacrum_template(depth: float, height: float, box: _Box):
    """The sacrum (label 0) at ``depth`` mm below its upper endplate; the coccyx below it."""
    X, Y = box.X, box.Y
    mat = np.zeros((X.shape[0], Y.shape[1]), np.uint8)
    if depth > height:  # coccyx
        _cancellous(mat, box, [(0.0, -8.0, 9.0, 6.0)])
        return mat, np.zeros(mat.shape, np.uint8)
    f = depth / height
    ry = 17 * (1 - 0.45 * f)
    yc = -(ry + 4)
    canal = _ellipse(X, Y, 0, yc, 10 * (1 - 0.6 * f), 5 * (1 - 0.4 * f))
    dorsal = _ellipse(X, Y, 0, yc, 10 * (1 - 0.6 * f) + 5, 5 * (1 - 0.4 * f) + 5) & ~canal
    dorsal |= _rect(X, Y, -3, 3, yc - 14 * (1 - f), yc)  # median sacral crest
    for side in (-1, 1):
        mat[_ellipse(X, Y, side * 16, yc - 14, 13 * (1 - f), 12 * (1 - f) + 0.1)] = _MUSCLE
    _cancellous(
        mat,
        box,
        [(0.0, 0.0, 24 * (1 - 0.5 * f), ry), (0.0, -8.0, 52 * (1 - 0.55 * f), 15 * (1 - 0.3 * f))],
    )
    mat[dorsal] = _POSTERIOR
    mat[canal] = _CSF
    return mat, np.zeros(mat.shape, np.uint8)


def _spine_key(anatomy: _Anatomy, index: int, z: float, sz: float):
    """Template key for the spine at height z, and how much of the slice is endplate (0-1)."""
    lv = anatomy.levels[index]
    if lv.kind == "sacrum":
        step = max(sz, 2.0)
        return ("S", round((lv.top - z) / step) * step), 0.0
    if z <= lv.body_bottom:
        return (index, "disc"), 0.0
    u = (lv.top - z) / (lv.top - lv.body_bottom)
    zone = "pedicle" if u < 0.2 else "transverse" if u < 0.55 else "lamina"
    # A slice averages what its thickness covers: thin endplates brighten the marrow of the
    # slices that contain them (partial volume), without a whole bright slice on coarse grids.
    lo, hi = z - sz / 2, z + sz / 2
    covered = sum(
        max(0.0, min(hi, b) - max(lo, a))
        for a, b in (
            (lv.top - _ENDPLATE_MM, lv.top),
            (lv.body_bottom, lv.body_bottom + _ENDPLATE_MM),
        )
    )
    return (index, zone), min(1.0, covered / sz)


def _template(anatomy: _Anatomy, key, box: _Box):
    if key[0] == "S":
        lv = anatomy.levels[-1]
        return _sacrum_template(key[1], lv.top - lv.body_bottom, box)
    index, zone = key
    lv = anatomy.levels[index]
    if lv.kind == "atlas":
        return _atlas_template(lv, zone, box)
    return _vertebra_template(lv, zone, anatomy.levels[index + 1], box)


# --- assembling a volume ------------------------------------------------------------------------


def make_phantom(
    spec: PhantomSpec, rng: np.random.Generator | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render one case: ``(image int16 HU, label uint8 0-25, affine 4x4 voxel->world mm)``.

    Both arrays have ``spec.shape`` and share the affine. For ``orientation == "RAS"`` the
    voxel axes run toward Right, Anterior, Superior and the affine is ``diag(sx, sy, sz)`` plus a
    translation; for "LPS" axes 0 and 1 are reversed (toward Left, Posterior) with
    ``diag(-sx, -sy, sz)``, describing the same anatomy in world space. The anatomy and tissue
    values come from ``spec.seed``; ``rng`` drives the image noise only (default: from the seed).
    """
    anatomy = anatomy_of(spec)
    grid = _grid(spec, anatomy)
    rng = np.random.default_rng([spec.seed, 4]) if rng is None else rng
    image, label = _render(anatomy, grid, rng)
    sx, sy, sz = spec.spacing_mm
    affine = np.diag([sx, sy, sz, 1.0])
    affine[:3, 3] = grid.x[0], grid.y[0], grid.z[0]
    if spec.orientation == "LPS":
        image, label = image[::-1, ::-1, :], label[::-1, ::-1, :]
        affine[:2, :2] = np.diag([-sx, -sy])
        affine[:2, 3] = grid.x[-1], grid.y[-1]
    return image, label, affine


def _render(
    anatomy: _Anatomy, grid: _Grid, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Fill the RAS+ volume slice by slice (Fortran order: each axial slice is contiguous)."""
    nx, ny, nz = len(grid.x), len(grid.y), len(grid.z)
    sx, sy, sz = grid.spacing
    t = anatomy.tissue
    image = np.empty((nx, ny, nz), np.int16, order="F")
    label = np.zeros((nx, ny, nz), np.uint8, order="F")
    box = _box(sx, sy)
    lut = np.array([0, t.muscle, 8, 35, t.disc, t.cortex, t.marrow, t.posterior], np.float64)
    # A bank of noise slices, picked at random per slice: far cheaper than fresh noise per voxel.
    bank = np.asfortranarray(rng.normal(0.0, t.noise, (nx, ny, min(nz, 16))).astype(np.int16))
    picks = rng.integers(0, bank.shape[2], nz)
    xs, ys = anatomy.x_spine(grid.z), anatomy.y_spine(grid.z)
    tops = np.array([lv.top for lv in anatomy.levels])
    ribs = np.array(anatomy.ribs)
    # Organs change slowly along z: one background per 2 mm (or per slice when thicker).
    bg_step = max(sz, 2.0)
    bg_key, templates = None, {}
    for k, z in enumerate(grid.z):
        if (key := round(z / bg_step)) != bg_key:
            background, ring = _background(anatomy, grid, key * bg_step)
            bg_key = key
        sl = image[:, :, k]
        sl[...] = background
        if ring is not None:
            _draw_ribs(sl, ring, ribs, z, 0.6 * t.cortex)
        index = int(np.searchsorted(-tops, -z, side="right")) - 1  # last level with top >= z
        if 0 <= index and z > anatomy.levels[-1].bottom:
            tkey, endplate = _spine_key(anatomy, index, z, sz)
            if tkey not in templates:
                templates[tkey] = _template(anatomy, tkey, box)
            mat, lab = templates[tkey]
            values = lut.copy()
            values[_MARROW] += endplate * (t.cortex - t.marrow)
            i0 = int(round((xs[k] - grid.x[0]) / sx)) - box.ci
            j0 = int(round((ys[k] - grid.y[0]) / sy)) - box.cj
            _paste(sl, label[:, :, k], mat, lab, values.astype(np.int16), i0, j0)
        sl += bank[:, :, picks[k]]
    np.clip(image, -1024, 3071, out=image)
    return image, label


def _paste(sl, lab_sl, mat, lab, values, i0, j0) -> None:
    """Draw a spine template with its corner at voxel (i0, j0), clipped to the slice."""
    a0, b0 = max(0, -i0), max(0, -j0)
    a1 = min(mat.shape[0], sl.shape[0] - i0)
    b1 = min(mat.shape[1], sl.shape[1] - j0)
    if a0 >= a1 or b0 >= b1:
        return
    m = mat[a0:a1, b0:b1]
    region = (slice(i0 + a0, i0 + a1), slice(j0 + b0, j0 + b1))
    np.copyto(sl[region], values[m], where=m > 0)
    lab_sl[region] = lab[a0:a1, b0:b1]
