"""Table 2 (AVGA, PSP on AVE): layout, the ratios' correlation, and (slow) all eight cells end to end."""

from __future__ import annotations

import json

import pytest

from simam2.adapters.ave.table import METHODS, PAPER, format_table, ratio_correlation


def test_layout_has_every_method_both_networks_and_the_papers_numbers():
    results = {(m.label, "avga"): {"acc": 0.5 + i / 100, "corr": None, "steps": 4} for i, m in enumerate(METHODS)}
    results[("+SimAM² +Decoupling-free", "psp")] = {"acc": 0.9, "corr": 0.25, "steps": 12}
    table = format_table(results, "title")
    lines = table.splitlines()
    assert lines[0] == "title" and "AVGA (synthetic)" in lines[1] and "PSP (paper)" in lines[1]
    rows = {m.label: next(line for line in lines if line.startswith(m.label + " ")) for m in METHODS}
    assert rows["Baseline"].split()[-4:] == ["50.0", "72.0", "—", "76.2"]
    assert rows["+SimAM² +Decoupling-free"].split()[-4:] == ["53.0", "73.0", "90.0", "77.2"]
    assert lines[-1] == "PSP, +SimAM² +Decoupling-free: Pearson r(ρ Eq. 11, ρ OGM-GE) over 12 steps = 0.250"
    assert len(PAPER) == 8


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
                      progress=lambda line: None)
    cells = json.loads((tmp_path / "table.json").read_text())
    assert len(cells) == 8 and all(0 <= c["acc"] <= 1 for c in cells)
    assert (tmp_path / "table.txt").read_text().strip() == table
    df = [c for c in cells if c["method"] == "+SimAM² +Decoupling-free"]
    assert all(c["steps"] > 0 for c in df)
