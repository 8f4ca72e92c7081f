"""The table runner: statistics from records alone, against scipy; resume, rerun of broken cells, outputs."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
from scipy.stats import ttest_rel

from simam2.adapters.machinery import grid
from simam2.adapters.machinery.records import RecordWriter, read_records
from simam2.adapters.machinery.stats import ratio_correlation

from fake_records import write_run

ROWS = (grid.Row("Baseline"), grid.Row("+SimAM²"), grid.Row("+Decoupling-Free +SimAM²"))
COLS = (grid.Column("concat", "Concatenation"), grid.Column("sum", "Summation"))

# made-up Top-1 of each cell-seed's evaluations (epoch 0, epoch 1, epoch 2), in [0, 1]
TOP1 = {
    ("Baseline", "concat"): {0: [0.40, 0.52, 0.50], 1: [0.42, 0.55, 0.54], 2: [0.38, 0.49, 0.51]},
    ("+SimAM²", "concat"): {0: [0.45, 0.56, 0.57], 1: [0.41, 0.58, 0.53], 2: [0.44, 0.50, 0.52]},
    ("+Decoupling-Free +SimAM²", "concat"): {0: [0.50, 0.61, 0.60], 1: [0.47, 0.63, 0.59], 2: [0.46, 0.55, 0.58]},
    ("Baseline", "sum"): {0: [0.30, 0.35, 0.37], 1: [0.31, 0.36, 0.36], 2: [0.33, 0.34, 0.35]},
    ("+SimAM²", "sum"): {0: [0.31, 0.38, 0.39], 1: [0.30, 0.37, 0.41], 2: [0.36, 0.39, 0.38]},
    ("+Decoupling-Free +SimAM²", "sum"): {0: [0.35, 0.40, 0.42], 1: [0.33, 0.42, 0.44], 2: [0.36, 0.41, 0.43]},
}


class FakeCells:
    """A table's ``run_cell``: writes made-up records for a cell-seed and counts its calls."""

    def __init__(self, fail: set | None = None):
        self.calls: dict[tuple[str, str, int], int] = {}
        self.fail = fail or set()

    def __call__(self, cs: grid.CellSeed) -> None:
        key = (cs.row.label, cs.column.key, cs.seed)
        self.calls[key] = self.calls.get(key, 0) + 1
        if key in self.fail:
            self.fail.discard(key)  # fails once, as a crash would
            w = RecordWriter(cs.records)
            w.start(upstream="ogm-ge", script="main.py", modalities=["audio", "visual"], metrics=["top1", "mAP"])
            w.end("failed", "RuntimeError: CUDA out of memory")
            raise RuntimeError("CUDA out of memory")
        df = cs.row.label.startswith("+Decoupling")
        w = write_run(None, epochs=3, steps=6, seed=100 * cs.seed + len(cs.row.label),
                      simam2=cs.row.label != "Baseline", modulation="df" if df else "none")
        top1 = iter(TOP1[(cs.row.label, cs.column.key)][cs.seed])
        with open(cs.records, "w") as f:
            for r in w.read():
                if r["event"] == "eval":
                    v = next(top1)
                    r.update(top1=v, mAP=v - 0.01, top1_m1=v - 0.1, top1_m2=v - 0.2)
                f.write(json.dumps(r) + "\n")


def _table(cells, **kw):
    return grid.Table("Table 1 on made-up records", ROWS, COLS, cells, split="test",
                      metric_labels={"top1": "Top-1"}, **kw)


def test_aggregate_matches_numpy_and_scipy(tmp_path):
    result = grid.run_table(_table(FakeCells(), paper={("+SimAM²", "concat"): 69.2}), tmp_path, seeds=3,
                            progress=False, say=lambda s: None)
    best = {k: {s: max(v) for s, v in seeds.items()} for k, seeds in TOP1.items()}
    for (row, col), by_seed in best.items():
        c = result.cell(row, col)
        x = np.array([by_seed[s] for s in range(3)])
        assert c.summary["top1"].mean == pytest.approx(x.mean())
        assert c.summary["top1"].std == pytest.approx(x.std(ddof=1))
        assert c.summary["top1_m1"].mean == pytest.approx(x.mean() - 0.1)  # from the same (best) evaluation
        if row == "Baseline":
            assert c.diff is None
            continue
        base = np.array([best[("Baseline", col)][s] for s in range(3)])
        assert c.diff.mean == pytest.approx((x - base).mean())
        assert c.diff.p == pytest.approx(ttest_rel(x, base).pvalue, rel=1e-12)
    # the made-up numbers give a small p for DF on concat and a large one for +SimAM² on concat
    assert result.cell("+Decoupling-Free +SimAM²", "concat").diff.p < 0.01
    assert result.cell("+SimAM²", "concat").diff.p > 0.1

    df = result.cell("+Decoupling-Free +SimAM²", "sum")
    rs = [ratio_correlation(read_records(tmp_path / "sum__decouplingfree_simam2" / f"seed{s}" / "records.jsonl"))[0]
          for s in range(3)]
    assert df.decoupling_free and df.ratio_r == pytest.approx(np.mean(rs))
    assert not result.cell("+SimAM²", "sum").decoupling_free and result.cell("+SimAM²", "sum").ratio_r is None

    text = (tmp_path / "table.txt").read_text()
    assert "r(ρ)" in text and "audio alone" in text and "Top-1 paper" in text and "69.2" in text
    line = next(l for l in text.splitlines() if l.startswith("+Decoupling-Free"))
    assert f"{100 * np.mean([best[('+Decoupling-Free +SimAM²', 'concat')][s] for s in range(3)]):.1f} ± " in line
    rows = list(csv.DictReader(io.StringIO((tmp_path / "table.csv").read_text())))
    assert len(rows) == 6 and float(rows[0]["top1_mean"]) == pytest.approx(result.cell("Baseline", "concat").summary["top1"].mean)
    data = json.loads((tmp_path / "table.json").read_text())
    cell = next(c for c in data["cells"] if c["row"] == "+SimAM²" and c["column"] == "concat")
    assert cell["diff_to_baseline"]["p"] == pytest.approx(ttest_rel(
        [best[("+SimAM²", "concat")][s] for s in range(3)], [best[("Baseline", "concat")][s] for s in range(3)]).pvalue)
    d = cell["diff_to_baseline"]  # one family per table: Holm over its compared cells, then the verdict
    holm = [c["diff_to_baseline"]["p"] for c in data["cells"] if c["diff_to_baseline"]]
    assert d["p_holm"] >= d["p"] and d["p_holm"] == pytest.approx(min(1.0, max(
        (len(holm) - i) * p for i, p in enumerate(sorted(holm)) if p <= d["p"])))
    assert d["verdict"] in ("gain", "loss", "equivalent", "inconclusive") and len(d["ci95"]) == 2
    assert cell["paper"] == {"top1": 69.2}
    assert (tmp_path / "table.md").read_text().startswith("# Table 1 on made-up records")


def test_pick_last_and_lower_is_better():
    evals = [{"event": "eval", "split": "test", "eer": e} for e in (0.30, 0.20, 0.20, 0.25)]
    evals.insert(1, {"event": "eval", "split": "val", "eer": 0.01})
    best = grid.pick_evaluation(evals, "test", "best", "eer", higher_is_better=False)
    assert best is evals[2]  # the first of the two equal minima
    assert grid.pick_evaluation(evals, "test", "last", "eer", False)["eer"] == 0.25
    with pytest.raises(grid.GridError, match="several splits"):
        grid.pick_evaluation(evals, None, "best", "eer", False)


def test_resume_skips_complete_and_reruns_a_run_killed_mid_epoch(tmp_path):
    cells = FakeCells()
    grid.run_table(_table(cells), tmp_path, seeds=2, progress=False, say=lambda s: None)
    assert len(cells.calls) == 12 and set(cells.calls.values()) == {1}

    # a run killed mid-epoch: steps of epoch 1 written, no evaluation, no end record
    broken = tmp_path / "concat__simam2" / "seed1"
    broken.joinpath("records.jsonl").unlink()
    write_run(broken / "records.jsonl", epochs=3, steps=6, stop_after_epoch=1, end=None)
    (broken / "leftover.pt").write_text("a half-written checkpoint")
    said = []
    result = grid.run_table(_table(cells), tmp_path, seeds=2, progress=False, say=said.append)
    assert cells.calls[("+SimAM²", "concat", 1)] == 2
    assert sum(cells.calls.values()) == 13  # nothing else ran again
    assert not (broken / "leftover.pt").exists()  # cleared before the rerun
    assert "11 of 12 runs already complete" in said[0]
    assert result.cell("+SimAM²", "concat").summary["top1"].n == 2

    # an interrupted run (end status interrupted) is run again too; --fresh runs everything
    recs = read_records(broken / "records.jsonl")
    recs[-1]["status"] = "interrupted"
    (broken / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    grid.run_table(_table(cells), tmp_path, seeds=2, progress=False, say=lambda s: None)
    assert cells.calls[("+SimAM²", "concat", 1)] == 3 and sum(cells.calls.values()) == 14
    grid.run_table(_table(cells), tmp_path, seeds=2, fresh=True, progress=False, say=lambda s: None)
    assert sum(cells.calls.values()) == 26

    # other table options (e.g. more epochs): the old runs do not count as done
    grid.run_table(_table(cells, options={"epochs": 5}), tmp_path, seeds=[1], progress=False, say=lambda s: None)
    assert sum(cells.calls.values()) == 32


def test_a_failing_cell_is_said_shown_and_rerun_next_time(tmp_path):
    cells = FakeCells(fail={("+SimAM²", "sum", 0)})
    said = []
    result = grid.run_table(_table(cells), tmp_path, seeds=2, progress=False, say=said.append)
    assert "sum__simam2 seed 0 failed: RuntimeError: CUDA out of memory" in said
    assert result.failed == ["sum__simam2 seed 0"]
    c = result.cell("+SimAM²", "sum")
    assert c.summary["top1"].n == 1 and c.per_seed[0]["status"] == "failed"
    text = (tmp_path / "table.txt").read_text()
    assert "(n=1)" in text and "+SimAM²: seed 0 failed" in text
    grid.run_table(_table(cells), tmp_path, seeds=2, progress=False, say=lambda s: None)
    assert cells.calls[("+SimAM²", "sum", 0)] == 2 and sum(cells.calls.values()) == 13
    assert grid.aggregate(_table(cells), tmp_path, 2).cell("+SimAM²", "sum").summary["top1"].n == 2


def test_bad_declarations_are_one_line_errors():
    with pytest.raises(grid.GridError, match="pick must be one of best, last"):
        grid.Table("t", ROWS, COLS, FakeCells(), pick="mean")
    with pytest.raises(grid.GridError, match="baseline 'x' is not a row"):
        grid.Table("t", ROWS, COLS, FakeCells(), baseline="x")
    with pytest.raises(grid.GridError, match="--seeds must be at least 1"):
        grid.seed_list(0)
    assert grid.slug("+OGM-GE +SimAM²") == "ogmge_simam2"


def test_runs_whose_zeta_weighs_the_other_modality_are_put_in_the_tables_order(tmp_path):
    """OGM-GE's FiLM runs name their modalities ["visual", "audio"] (ζ weighs the filmed visual term):
    their per-modality values land under the table's audio and visual columns all the same."""
    def cells(cs):
        film = cs.column.key == "sum"
        w = write_run(None, epochs=1, steps=2, seed=cs.seed, simam2=False, modulation="none")
        with open(cs.records, "w") as f:
            for r in w.read():
                if r["event"] == "start" and film:
                    r["modalities"] = ["visual", "audio"]
                if r["event"] == "eval":  # audio alone 0.7, visual alone 0.3, in each run's own order
                    r.update(top1=0.8, top1_m1=0.3 if film else 0.7, top1_m2=0.7 if film else 0.3)
                f.write(json.dumps(r) + "\n")

    table = grid.Table("t", (grid.Row("Baseline"),), COLS, cells, split="test")
    result = grid.run_table(table, tmp_path, seeds=1, progress=False, say=lambda s: None)
    assert result.modalities == ("audio", "visual")
    for col in ("concat", "sum"):
        c = result.cell("Baseline", col)
        assert (c.summary["top1_m1"].mean, c.summary["top1_m2"].mean) == (0.7, 0.3)


def test_a_second_run_on_the_same_folder_is_refused_and_deletes_nothing(tmp_path):
    """B3: two runs of one table on one out folder — the second refuses in one line."""
    cells = FakeCells()
    grid.run_table(_table(cells), tmp_path, seeds=1, progress=False, say=lambda s: None)
    before = {p: p.read_bytes() for p in tmp_path.rglob("records.jsonl")}
    with grid.folder_lock(tmp_path):  # another run holds the folder
        with pytest.raises(grid.GridError, match="in use by another table run"):
            grid.run_table(_table(cells), tmp_path, seeds=2, fresh=True, progress=False, say=lambda s: None)
    assert {p: p.read_bytes() for p in tmp_path.rglob("records.jsonl")} == before
    grid.run_table(_table(cells), tmp_path, seeds=1, progress=False, say=lambda s: None)  # released


def test_results_made_with_other_options_are_never_averaged_in(tmp_path):
    """B4: a table at one option, then at another interrupted after one cell: the stale cells are
    left out of the table and named, not averaged with the new one."""
    grid.run_table(_table(FakeCells(), options={"epochs": 1}), tmp_path, seeds=1, progress=False,
                   say=lambda s: None)

    class Interrupt(FakeCells):
        def __call__(self, cs):
            super().__call__(cs)
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        grid.run_table(_table(Interrupt(), options={"epochs": 2}), tmp_path, seeds=1, progress=False,
                       say=lambda s: None)
    data = json.loads((tmp_path / "table.json").read_text())
    counted = [c for c in data["cells"] if c["summary"].get("top1", {}).get("n")]
    assert len(counted) == 1 and len(data["stale"]) == 5 and data["options"] == {"epochs": 2}
    assert "made with other options" in (tmp_path / "table.txt").read_text()


def test_a_string_metric_is_skipped_and_named_and_the_table_is_written(tmp_path):
    """A9: a string where a number belongs (FOP's pick, or a metric written as text) on resume."""
    cells = FakeCells()
    grid.run_table(_table(cells), tmp_path, seeds=2, progress=False, say=lambda s: None)
    path = next(p for p in tmp_path.rglob("records.jsonl") if "concat" in str(p))
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    for r in lines:
        if r["event"] == "eval":
            r["top1_m1"] = "last"
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    result = grid.run_table(_table(cells), tmp_path, seeds=2, progress=False, say=lambda s: None)
    assert result.skipped and "'last' is no number" in result.skipped[0]
    assert "not a number" in (tmp_path / "table.txt").read_text()


def test_a_column_that_reads_anothers_runs_shows_them(tmp_path):
    # Table 3's Unseen-Unheard reads the runs of Seen-Heard: their cell.json names the column that ran them
    shared = grid.Column("concat_again", "Concatenation, read again", split="test", shares="concat")
    table = grid.Table("t", ROWS, (COLS[0], shared), FakeCells(), split="test")
    result = grid.run_table(table, tmp_path, seeds=2, progress=False, say=lambda s: None)
    assert not result.stale
    for row in ROWS:
        assert result.cell(row.label, "concat_again").summary["top1"].mean == \
            result.cell(row.label, "concat").summary["top1"].mean
    assert result.cell("Baseline", "concat_again").summary["top1"].mean == pytest.approx((0.52 + 0.55) / 2)
