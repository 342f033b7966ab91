"""Facet counts for a filtered set of cases, computed from one small query."""

from __future__ import annotations

from collections import Counter

from ctspine.labels import LABELS, values_of


def facet_counts(queryset) -> dict:
    """Counts per source, split, anomaly (curated and label-derived), vertebra, scan position and
    download state among the cases of ``queryset``.

    One query of seven narrow columns and counting in Python: cheaper than seven GROUP BY queries
    plus 25 bitmask aggregates.
    """
    rows = queryset.order_by().values_list(
        "source",
        "split",
        "curated_anomaly",
        "label_anomaly",
        "scan_position",
        "vertebra_mask",
        "downloaded",
    )
    source, split, curated, derived, position, vertebra, downloaded = (Counter() for _ in range(7))
    total = 0
    for src, spl, cur, der, pos, mask, down in rows:
        total += 1
        source[src] += 1
        split[spl or "unknown"] += 1
        curated[cur or "none"] += 1
        derived[der or "none"] += 1
        if pos:
            position[pos] += 1
        downloaded["yes" if down else "no"] += 1
        for value in values_of(mask):
            vertebra[value] += 1
    return {
        "total": total,
        "source": dict(sorted(source.items())),
        "split": dict(split),
        "anomaly": {
            "lumbarization": curated["lumbarization"],
            "sacralization": curated["sacralization"],
            "any": total - curated["none"],
            "none": curated["none"],
        },
        "anomaly_labels": {
            "lumbarization": derived["lumbarization"],
            "sacralization": derived["sacralization"],
            "any": total - derived["none"],
            "none": derived["none"],
        },
        "vertebra": {label.name: vertebra[label.value] for label in LABELS},
        "position": dict(position),
        "downloaded": dict(downloaded),
    }
