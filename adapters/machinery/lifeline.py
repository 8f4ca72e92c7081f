"""A child process that dies with its parent: Linux's parent-death signal, set through ``prctl``.

``simam2 run --nproc-per-node`` starts torchrun, which starts the ranks, each in a session of its
own (so that a signal reaches them once, through their parent). A parent killed outright (SIGKILL,
the OOM killer) forwards nothing: without a lifeline its children run on, orphaned, and write their
records as if nothing had happened. With one, the kernel sends the child ``signum`` when its parent
dies, which a rank turns into KeyboardInterrupt (its records end ``interrupted``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys

PR_SET_PDEATHSIG = 1


def die_with_parent(signum: int = signal.SIGTERM, parent: int | None = None) -> bool:
    """Ask the kernel to send ``signum`` to this process when its parent dies; whether it could
    (Linux only; elsewhere nothing is set).

    ``parent``: the parent's pid as the caller knew it (e.g. in a ``preexec_fn``, the pid of the
    process that forked). Had it died before the call, the signal comes at once: the kernel only
    watches a parent alive at the time of the call.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, int(signum), 0, 0, 0) != 0:
            return False
    except (OSError, AttributeError):
        return False
    if parent is not None and os.getppid() != parent:
        os.kill(os.getpid(), signum)
    return True
