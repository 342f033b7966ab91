"""Table 2 aggregation, printout and strip plot geometry (pure), on hand-made numbers."""

from __future__ import annotations

import csv

import pytest

from ctspine.labels import LABELS, label_name
from ctspine.metrics import LabelMetrics
from evaluation.plots import COLUMN_WIDTH, PLOT_HEIGHT, TOP, strip_plot
from evaluation.published import TABLE_PATH, published_table
from evaluation.table2 import (
    MEAN_OF_CASES,
    MEAN_OF_SPINE,
    MEAN_OF_VERTEBRAE,
    POOLED_MEAN,
    CaseRecord,
    Cell,
    anomaly_table,
    format_table,
    level_errors,
    mean_of_rows,
    report,
    source_tables,
    split_table,
    summarize,
    worst_cases,
)
from tests.conftest import CTSPINE_META

L4, L5, L6 = 23, 24, 25
# The published table, as the task gives it (beside the repository).
SHARED_PAPER_TABLE = CTSPINE_META / "paper_table2.csv"


def label_value(label, dice, hd95_mm, ref_voxels=1, predicted_as=None, off_by_one=False):
    """A vertebra of a case; not predicted at all when it has a reference but no HD95."""
    pred_voxels = 0 if hd95_mm is None and ref_voxels else 1
    return LabelMetrics(
        label, label_name(label), dice, hd95_mm, hd95_mm, 0.0, ref_voxels, pred_voxels,
        predicted_as, off_by_one,
    )  # fmt: skip


def record(case_id, split, labels, *, source="COLONOG", anomaly="", spine=(1.0, 1.0)):
    values = tuple(label_value(*v) for v in labels)
    dices = [v.dice for v in values]
    hds = [v.hd95_mm for v in values if v.hd95_mm is not None]
    return CaseRecord(
        case_id, split, source, anomaly,
        sum(dices) / len(dices), sum(hds) / len(hds) if hds else None, *spine, labels=values,
    )  # fmt: skip


# (label, dice, hd95 mm, ref voxels, predicted as, off by one)
A = record("a", "test_public", [(L4, 0.9, 2.0, 10, L4, False), (L5, 0.8, 4.0, 10, L5, False)])
B = record(
    "b", "test_public",
    [(L4, 0.7, 6.0, 10, L4, False), (L5, 0.6, 3.0, 10, L5, False), (L6, 0.0, None, 10, L5, True)],
    anomaly="lumbarization", source="MSD-T10", spine=(0.9, 3.0),
)  # fmt: skip
C = record("c", "test_private", [(L5, 0.0, None, 10, None, False), (L6, 0.0, None, 0, None, False)])


def test_vertebra_cells_average_over_cases_where_counted_and_distances_where_defined():
    cells = summarize([A, B, C])
    assert cells["L4"].dice == pytest.approx(0.8) and cells["L4"].hd95_mm == pytest.approx(4.0)
    assert (cells["L5"].n, cells["L5"].n_hd95) == (3, 2)
    assert cells["L5"].dice == pytest.approx((0.8 + 0.6 + 0.0) / 3)
    assert cells["L5"].hd95_mm == pytest.approx(3.5)
    assert (cells["L6"].dice, cells["L6"].hd95_mm, cells["L6"].n) == (0.0, None, 2)
    assert "C1" not in cells


def test_mean_of_vertebrae_is_the_mean_of_the_rows_and_the_other_means_keep_their_names():
    cells = summarize([A, B])
    # Rows: L4 0.8 / 4.0 mm, L5 0.7 / 3.5 mm, L6 0.0 / no HD95 (missed in B).
    mean = cells[MEAN_OF_VERTEBRAE]
    assert mean.dice == pytest.approx((0.8 + 0.7 + 0.0) / 3)
    assert (mean.hd95_mm, mean.n, mean.n_hd95) == (pytest.approx((4.0 + 3.5) / 2), 3, 2)
    assert cells["L6"].missed == 1 and cells["L5"].missed == 0
    assert cells[MEAN_OF_CASES].dice == pytest.approx(((0.9 + 0.8) / 2 + (0.7 + 0.6 + 0.0) / 3) / 2)
    assert cells[MEAN_OF_CASES].hd95_mm == pytest.approx((3.0 + 4.5) / 2)
    pooled = cells[POOLED_MEAN]
    assert (pooled.dice, pooled.n, pooled.n_hd95) == (pytest.approx(0.6), 5, 4)
    assert pooled.hd95_mm == pytest.approx((2.0 + 4.0 + 6.0 + 3.0) / 4)
    assert cells[MEAN_OF_SPINE].dice == pytest.approx(0.95)
    assert cells[MEAN_OF_SPINE].hd95_mm == pytest.approx(2.0)


def paper_rows():
    with open(SHARED_PAPER_TABLE, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.parametrize("split", ["test_public", "test_private", "test_verse"])
def test_the_papers_rows_give_the_papers_summary_rows(split):
    rows = paper_rows()
    vertebrae = [row for row in rows if row["name"]]
    assert [row["name"] for row in vertebrae] == [label.name for label in LABELS]
    cells = [
        Cell(float(row[f"{split}_dsc"]), float(row[f"{split}_hd95_mm"]), 1, 1) for row in vertebrae
    ]
    mean = mean_of_rows(cells)
    printed = next(row for row in rows if row["label"] == MEAN_OF_VERTEBRAE)
    assert f"{mean.dice:.3f}" == printed[f"{split}_dsc"]
    assert f"{mean.hd95_mm:.2f}" == printed[f"{split}_hd95_mm"]
    assert (mean.n, mean.n_hd95) == (25, 25)
    # The same through the aggregation of cases: one case per vertebra holding the paper's row.
    records = [
        record(f"case-{row['label']}", split, [(int(row["label"]), cell.dice, cell.hd95_mm)])
        for row, cell in zip(vertebrae, cells, strict=True)
    ]
    through_cases = summarize(records)[MEAN_OF_VERTEBRAE]
    assert f"{through_cases.dice:.3f}" == printed[f"{split}_dsc"]
    assert f"{through_cases.hd95_mm:.2f}" == printed[f"{split}_hd95_mm"]


def test_the_shipped_paper_table_is_the_published_one():
    with open(TABLE_PATH, newline="") as handle:
        assert list(csv.DictReader(handle)) == paper_rows()
    published = published_table()
    assert published["test_verse"]["L6"] == (0.0, 45.16)
    assert published["test_public"][MEAN_OF_VERTEBRAE] == (0.869, 5.40)


def test_split_table_has_the_paper_rows_columns_and_published_figures():
    table = split_table([A, B, C], ["test_public", "test_private"])
    assert [c.title for c in table.columns] == ["Test_public", "Test_private"]
    assert [c.cases for c in table.columns] == [2, 1]
    assert [r.title for r in table.rows][:2] == ["C1", "C2"]
    assert [r.title for r in table.rows][24:27] == ["L6", "Mean of Vertebrae", "Mean of Spine"]
    assert table.cell("L6", "test_public").dice == 0.0
    assert table.cell("C1", "test_public").n == 0
    assert table.row(MEAN_OF_VERTEBRAE).published == ((0.869, 5.40), (0.840, 6.41))
    assert table.row(MEAN_OF_SPINE).published == ((0.985, 1.0), (0.984, 1.0))
    assert table.row("L5").published == ((0.969, 1.49), (0.943, 2.45))
    assert table.row(MEAN_OF_CASES).published == (None, None)
    assert [r.title for r in table.rows][-2:] == ["Mean over cases", "Pooled over vertebrae"]
    assert table.columns[0].filters == {"split": "test_public"}


def test_source_and_anomaly_tables():
    (public, private) = source_tables([A, B, C], ["test_public", "test_private"])
    assert [c.key for c in public.columns] == ["COLONOG", "MSD-T10"]
    assert public.columns[1].filters == {"split": "test_public", "source": "MSD-T10"}
    assert public.cell("L6", "MSD-T10").n == 1 and public.cell("L6", "COLONOG").n == 0
    anomalies = anomaly_table([A, B, C], ["test_public", "test_private"])
    assert [c.key for c in anomalies.columns] == ["lumbarization", "sacralization", "none"]
    assert [c.cases for c in anomalies.columns] == [1, 0, 2]
    assert anomalies.cell("L6", "lumbarization").dice == 0.0


def test_level_errors_count_off_by_one_other_level_and_not_found():
    rows = {(r.name, r.split): r for r in level_errors([A, B, C], ["test_public", "test_private"])}
    l6 = rows[("L6", "test_public")]
    assert (l6.cases, l6.off_by_one, l6.other_level, l6.not_found, l6.taken_for) == (
        1,
        1,
        0,
        0,
        (("L5", 1),),
    )
    assert rows[("L5", "test_private")].not_found == 1
    assert ("L6", "test_private") not in rows  # L6 of case c is in the prediction only


def test_worst_cases_lowest_dice_first_undefined_distance_worst():
    worst = worst_cases([A, B, C], per_label=2)
    assert [(w.case_id, w.dice) for w in worst["L5"]] == [("c", 0.0), ("b", 0.6)]
    assert list(worst) == ["L4", "L5", "L6"]


def test_printout_in_the_paper_layout():
    text = format_table(split_table([A, B, C], ["test_public", "test_private"]))
    lines = text.splitlines()
    assert lines[0] == "Table 2: DSC and HD95 (mm) per vertebra"
    assert "Test_public (2 cases)" in lines[2] and "Test_private (1 case)" in lines[2]
    column = ["DSC", "HD95", "mm", "n", "missed", "paper", "HD95"]
    assert lines[3].split() == ["Vertebra", *column, *column]
    assert [line.split()[0] for line in lines[4:7]] == ["L4", "L5", "L6"]  # empty rows left out
    # Ours (missed: blank when none), then the paper's, "!" where they differ by more than
    # 0.05 DSC or 2 mm.
    assert lines[5].split() == [
        "L5", "0.700", "3.50", "2", "0.969!", "1.49!", "0.000", "—", "1/0", "1", "0.943!", "2.45",
    ]  # fmt: skip
    # The missed count sits in its column: right-aligned under "missed".
    assert lines[3].index("missed") + len("missed") == lines[6].index(" 1 ") + 2
    assert "missed = cases where the vertebra is in the ground truth and not predicted" in text
    assert "C1" not in text
    mean = next(line for line in lines if line.startswith("Mean of Vertebrae"))
    assert mean.split()[3:] == [
        "0.500", "3.75", "3/2", "0.869!", "5.40", "0.000", "—", "2/0", "0.840!", "6.41",
    ]  # fmt: skip
    cases = next(line for line in lines if line.startswith("Mean over cases"))
    assert cases.split()[3:6] == ["0.642", "3.75", "2"]
    assert "* Mean of Spine: the mean over cases of the binary spine" in text
    assert "* Mean over cases: the mean over cases of each case's own mean" in text


def test_report_is_plain_json_values():
    import json

    document = json.loads(json.dumps(report([A, B, C], ["test_public", "test_private"])))
    assert document["cases"] == 3
    assert document["table2"]["columns"][0]["key"] == "test_public"
    assert document["worst_cases"]["L6"][0]["case_id"] in {"b", "c"}


def test_strip_plot_geometry():
    plot = strip_plot([(L5, "a", 1.0), (L5, "b", 0.0), (L5, "c", 0.5), (L4, "a", 0.25)])
    assert [c.name for c in plot.columns] == ["L4", "L5"]
    l5 = plot.columns[1]
    assert l5.n == 3 and l5.median == 0.5
    assert {p.case_id: p.y for p in l5.points} == {
        "a": TOP,
        "b": TOP + PLOT_HEIGHT,
        "c": TOP + PLOT_HEIGHT / 2,
    }
    assert all(abs(p.x - l5.x) <= 9 for p in l5.points)
    assert l5.box_top == pytest.approx(TOP + 0.25 * PLOT_HEIGHT) and l5.box_height == pytest.approx(
        PLOT_HEIGHT / 2
    )
    assert l5.x - plot.columns[0].x == COLUMN_WIDTH
    # The jitter depends on the case id alone: "a" keeps its offset from the column centre
    # whatever else is plotted, and the three cases do not sit on one vertical line.
    alone = strip_plot([(L5, "a", 0.5)]).columns[0]
    a = next(p for p in l5.points if p.case_id == "a")
    assert alone.points[0].x - alone.x == pytest.approx(a.x - l5.x, abs=0.1)
    assert alone.points[0].y == TOP + PLOT_HEIGHT / 2
    assert len({p.x for p in l5.points}) == 3


def test_resolution_and_group_plot_geometry():
    from evaluation.plots import LEFT, SCATTER_WIDTH, group_plot, resolution_plot

    plot = resolution_plot([("a", 1.25, 1.0, "COLONOG"), ("b", 5.0, 0.5, "MSD-T10")])
    a, b = plot.points
    assert (a.x, a.y) == (LEFT + 1.25 / 5 * SCATTER_WIDTH, TOP)
    assert (b.x, b.y) == (LEFT + SCATTER_WIDTH, TOP + PLOT_HEIGHT / 2)
    assert a.colour != b.colour and [e.name for e in plot.legend] == ["COLONOG", "MSD-T10"]
    assert plot.x_ticks[-1][1] == "5"
    groups = group_plot([(L6, "lumbarization", 0.0, 2), (L6, "none", 1.0, 5), (L5, "none", 0.9, 5)])
    assert [c.name for c in groups.columns] == ["L5", "L6"]
    l6 = groups.columns[1]
    assert [(d.group, d.y) for d in l6.dots] == [
        ("lumbarization", TOP + PLOT_HEIGHT),
        ("none", TOP),
    ]
    assert l6.dots[0].x < l6.dots[1].x
