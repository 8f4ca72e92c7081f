"""Test-only capture inside each rank of a ``simam2 run --nproc-per-node`` job (tests/test_launch.py).

The test puts this folder on PYTHONPATH and sets SIMAM2_TEST_CAPTURE to a folder; every Python
process started under it imports this module at startup. In a torchrun worker (RANK set) it watches,
through torch's global module hooks, the run's model: its state and inputs at the first training
forward, the fused loss of that step, and its state at exit; it writes them to
``$SIMAM2_TEST_CAPTURE/rank{RANK}.pt``. With SIMAM2_TEST_FAIL_RANK=R, rank R raises at its first
training forward (a rank that dies). Each rank also writes its process id and torchrun's to ``pid{RANK}`` there
at startup (torchrun starts each rank in a session of its own, out of reach of the test's process group).
"""

import os

if os.environ.get("SIMAM2_TEST_CAPTURE") and "RANK" in os.environ:
    import atexit
    import copy

    import torch
    from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook

    _rank = int(os.environ["RANK"])
    # torchrun starts each rank in a session of its own: the test needs the ids to see them end
    with open(os.path.join(os.environ["SIMAM2_TEST_CAPTURE"], f"pid{_rank}"), "w") as f:
        f.write(f"{os.getpid()} {os.getppid()}")  # the rank's, torchrun's
    _save = torch.save
    _seen: dict = {}

    def _run_model(module):
        from simam2.adapters.machinery.install import current_context

        ctx = current_context()
        return ctx is not None and ctx.probe is not None and ctx.probe.model is module

    def _pre(module, args):
        if "model" in _seen or not module.training or not _run_model(module):
            return
        if os.environ.get("SIMAM2_TEST_FAIL_RANK") == str(_rank):
            raise RuntimeError(f"rank {_rank} fails on purpose")
        _seen["model"] = module
        _seen["initial"] = copy.deepcopy(module.state_dict())
        _seen["inputs"] = [a.detach().clone() for a in args]

    def _post(module, args, output):
        if (isinstance(module, torch.nn.CrossEntropyLoss) and "model" in _seen and "loss" not in _seen
                and _seen["model"].training):
            _seen["loss"] = output.detach().clone()
            _seen["labels"] = args[1].detach().clone()

    def _dump():
        if "model" in _seen:
            out = {k: v for k, v in _seen.items() if k != "model"}
            out["final"] = _seen["model"].state_dict()
            out["params"] = dict(_seen["model"].named_parameters())
            _save(out, os.path.join(os.environ["SIMAM2_TEST_CAPTURE"], f"rank{_rank}.pt"))

    register_module_forward_pre_hook(_pre)
    register_module_forward_hook(_post)
    atexit.register(_dump)
