"""Table 2 (AVGA, PSP on AVE): layout, the ratios' correlation, and (slow) all eight cells end to end."""

from __future__ import annotations

import json

import pytest

from simam2.adapters.ave.table import METHODS, PAPER, ratio_correlation


def test_rows_are_paper_faithful_and_the_papers_numbers_are_beside(tmp_path):
    from simam2.adapters.ave.table import table
    from simam2.adapters.machinery.grid import CellSeed

    t = table(tmp_path, 2, tmp_path, tmp_path)
    zeta = {m.label: m.run_config(CellSeed(m, t.columns[0], 0, tmp_path)).zeta for m in METHODS if m.simam2}
    assert zeta == {"+SimAM²": "fixed", "+SimAM² +Decoupling-free": "learnable"}  # learnable ζ only with df
    assert len(PAPER) == 8 and t.paper[("+SimAM² +Decoupling-free", "psp")] == {"acc": 77.2}
    assert [c.key for c in t.columns] == ["avga", "psp"] and t.split == "test"


def test_ratio_correlation_uses_steps_with_both_ratios():
    steps = [{"event": "step", "rho_df": x, "rho_decoupled": 2 * x + 1} for x in (0.9, 1.0, 1.2, 1.1)]
    steps += [{"event": "step", "rho_df": None, "rho_decoupled": 5.0}, {"event": "eval", "acc": 0.5}]
    assert ratio_correlation(steps) == pytest.approx(1.0)
    assert ratio_correlation(steps[:2]) is None  # too few steps
    assert ratio_correlation([{"event": "step", "rho_df": 1.0, "rho_decoupled": y} for y in (1, 2, 3)]) is None


@pytest.mark.slow
@pytest.mark.upstream
def test_run_table_runs_the_eight_cells(upstream_checkout, tmp_path):
    from simam2.adapters.ave.table import run_table

    table = run_table(tmp_path, epochs=2, n_train=8, n_val=4, n_test=4, batch_size=4,
                      checkout_avga=upstream_checkout("avga"), checkout_psp=upstream_checkout("psp"),
                      progress=lambda line: None, bar=False)
    cells = json.loads((tmp_path / "table.json").read_text())["cells"]
    assert len(cells) == 8 and all(0 <= c["summary"]["acc"]["mean"] <= 1 for c in cells)
    assert all("acc_m1" in c["summary"] and "acc_head_m2" in c["summary"] for c in cells)
    assert (tmp_path / "table.txt").read_text() == table
    assert sum(c["decoupling_free"] for c in cells) == 2
