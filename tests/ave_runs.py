"""What the AVGA and PSP end-to-end tests share: Table 2's four configurations, each run once."""

import contextlib
import io

from simam2.adapters import RunConfig, run_script

#: Table 2's rows: baseline, +SimAM², +OGM-GE, +SimAM² + decoupling-free.
CONFIGS = {
    "baseline": RunConfig(seed=0),
    "simam2": RunConfig(simam2=True, zeta="learnable", seed=0),
    "ogm-ge": RunConfig(modulation="ogm-ge", alpha=0.5, seed=0),
    "simam2+df": RunConfig(simam2=True, zeta="learnable", modulation="df", alpha=0.5, seed=0),
}


def run_each_config(adapter, argv, checkout, tmp_path_factory) -> dict:
    """The script once per configuration, each in its own working directory:
    {name: (ctx, stdout, workdir)}."""
    out = {}
    for name, config in CONFIGS.items():
        workdir = tmp_path_factory.mktemp(name.replace("+", "_"))
        with contextlib.redirect_stdout(io.StringIO()) as printed:
            ctx = run_script(adapter, argv, config, checkout=checkout, cwd=workdir)
        out[name] = (ctx, printed.getvalue(), workdir)
    return out
