"""The run-time instruments of adapters/machinery/steps.py: the step buffer, the ζ histogram and the
one mapping of the run options onto the core's gradient modulator."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from simam2.adapters import RunConfig
from simam2.adapters.machinery.steps import STEP_FIELDS, ZETA_EDGES, StepBuffer, modulator_for, zeta_counts, zeta_record
from simam2.core import SimAM2


def _written():
    rows = []
    return rows, lambda event, **fields: rows.append({"event": event, **fields})


def test_the_buffer_writes_named_fields_in_order_and_nan_for_the_missing():
    buf = StepBuffer()
    buf.add(4, loss=torch.tensor(0.5), k1=torch.tensor(0.25))
    buf.add(5, loss=1.5, r=torch.tensor(0.75, dtype=torch.float64))  # the epoch of the first step holds
    rows, write = _written()
    assert buf.flush(write) == 4 and not buf
    assert [list(r) for r in rows] == [["event", "epoch", "step", *STEP_FIELDS]] * 2
    assert [(r["epoch"], r["step"], r["loss"], r["k1"], r["r"]) for r in rows][0][:4] == (4, 0, 0.5, 0.25)
    assert rows[1]["loss"] == 1.5 and rows[1]["r"] == 0.75 and np.isnan(rows[1]["k1"]) and np.isnan(rows[0]["r"])


def test_the_buffer_keeps_float64_only_when_asked():
    r = torch.tensor(1 / 3, dtype=torch.float64)
    for dtype, expected in ((torch.float32, float(torch.tensor(1 / 3, dtype=torch.float32))), (torch.float64, 1 / 3)):
        buf = StepBuffer(dtype=dtype)
        buf.add(0, r=r)
        rows, write = _written()
        buf.flush(write)
        assert rows[0]["r"] == expected


def test_an_unknown_step_field_is_refused():
    with pytest.raises(ValueError, match="unknown step fields \\['rho'\\]"):
        StepBuffer().add(0, rho=1.0)


def test_zeta_counts_follow_numpys_histogram_also_just_below_an_edge():
    # float32(0.35) is below 0.35: a float32 comparison would count it in bin 7, NumPy in bin 6
    just_below = [float(np.float32(k / 20)) for k in range(21) if float(np.float32(k / 20)) < k / 20]
    assert just_below  # the case exists
    z = torch.tensor(just_below + [0.0, 0.05, 0.5, 1.0, -0.1, 1.1, float("nan")], dtype=torch.float32)
    z = torch.cat([z, torch.rand(1000, generator=torch.Generator().manual_seed(0))])
    expected, _ = np.histogram(z.numpy().astype(np.float64), bins=np.array(ZETA_EDGES))
    assert zeta_counts(z).tolist() == expected.tolist()
    rows, write = _written()
    zeta_record(write, 3, z.reshape(1, -1))
    assert rows == [{"event": "zeta", "epoch": 3, "edges": [i / 20 for i in range(21)], "counts": expected.tolist()}]


def _groups():
    return {"a": [nn.Parameter(torch.ones(2))], "b": [nn.Parameter(torch.ones(2))]}


def test_modulator_for_maps_each_modulation_onto_the_core():
    fusion = SimAM2(4, zeta_mode="learnable")
    assert modulator_for(RunConfig(), _groups(), fusion) is None
    ogm = modulator_for(RunConfig(modulation="ogm-ge", ge=False, alpha=0.3, seed=1), _groups(), fusion)
    assert (ogm.ratio, ogm.noise, ogm.fusion, ogm.alpha, ogm.seed) == ("decoupled", False, None, 0.3, 1)
    assert modulator_for(RunConfig(modulation="ogm-ge"), _groups(), fusion).noise
    assert modulator_for(RunConfig(modulation="ogm-ge"), _groups(), fusion, upstream_modulates=True) is None
    df = modulator_for(RunConfig(simam2=True, zeta="learnable", modulation="df", modulation_start=2,
                                 modulation_end=4), _groups(), fusion, lambda: 3)
    assert (df.ratio, df.noise, df.fusion, df.start_epoch, df.end_epoch, df.current_epoch()) == ("zeta", True, fusion, 2, 4, 3)
    asked = []
    modulator_for(RunConfig(), lambda: asked.append(1), fusion)
    assert asked == []  # the groups are read only where a modulator is made
