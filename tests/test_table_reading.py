"""SPEC §2's reading of U reaches every SimAM² row of Tables 1 and 2 (``simam2 table --u``), and a
folder made with one reading is never averaged with the other."""

from __future__ import annotations

import pytest

from simam2.adapters.cli import main
from simam2.adapters.machinery.grid import CellSeed
from simam2.adapters.ogm_ge import table as table1


@pytest.mark.parametrize("u", ["eq4", "vanilla"])
def test_table1_hands_its_reading_to_the_simam2_rows_only(u, tmp_path, monkeypatch):
    seen = {}
    monkeypatch.setattr(table1, "run_script", lambda spec, argv, config, **kw: seen.__setitem__(cs.row.label, config))
    t = table1.table(tmp_path, 1, u=u)
    for row in t.rows:
        cs = CellSeed(row, t.columns[0], 0, tmp_path / row.label.replace(" ", "_"))
        cs.folder.mkdir()
        t.run_cell(cs)
    for label, config in seen.items():
        assert config.u == (u if config.simam2 else "eq4"), label
        assert config.plain()["u"] == config.u  # the records' start config carries it
    assert any(c.simam2 for c in seen.values()) and any(not c.simam2 for c in seen.values())
    assert t.options.get("u") == (None if u == "eq4" else "vanilla")  # another reading: another result


def test_tables_whose_zeta_is_not_fixed_refuse_a_reading(capsys, tmp_path):
    assert main(["table", "fop", "--u", "vanilla", "--out", str(tmp_path)]) == 2
    assert "readings coincide" in capsys.readouterr().err


def test_only_table_1_cells_run_under_torchrun(capsys, tmp_path):
    assert main(["table", "ave", "--nproc-per-node", "2", "--out", str(tmp_path)]) == 2
    assert "--nproc-per-node is Table 1's" in capsys.readouterr().err
    assert main(["table", "ogm-ge", "--nproc-per-node", "0", "--out", str(tmp_path)]) == 2
    assert "--nproc-per-node must be at least 1" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # refused before anything was written


@pytest.mark.parametrize("u", ["eq4", "vanilla"])
def test_the_balancemm_table_fixes_zeta_in_its_simam2_row_and_hands_it_the_reading(u, tmp_path, monkeypatch):
    from simam2.adapters.balancemm import table as bmm

    seen = {}
    monkeypatch.setattr(bmm, "run", lambda argv, config, **kw: seen.__setitem__(tuple(argv), config))
    t = bmm.table(tmp_path, rows=("+SimAM²", "+Decoupling-Free +SimAM²"), u=u)
    for row in t.rows:
        cs = CellSeed(row, t.columns[0], 0, tmp_path / row.key)
        cs.folder.mkdir()
        t.run_cell(cs)
    by_trainer = {argv[argv.index("--trainer") + 1]: c for argv, c in seen.items() if c.simam2}
    assert (by_trainer["baselineTrainer"].zeta, by_trainer["baselineTrainer"].u) == ("fixed", u)  # SPEC §7
    assert (by_trainer["OGMTrainerDF"].zeta, by_trainer["OGMTrainerDF"].u) == ("learnable", "eq4")
    assert t.options.get("u") == (None if u == "eq4" else "vanilla")
