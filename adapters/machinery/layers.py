"""What replacement classes of every upstream share: the init shim and publishing for pickle."""

from __future__ import annotations

import sys

from torch import nn


class InitShim:
    """Sits between a replacement class and the upstream class it extends, in the MRO.

    Upstreams call ``super(ClassName, self).__init__()``, looking ``ClassName`` up in their module
    at call time, where it now finds the replacement: the call lands here (no arguments) and does
    what the upstream meant, ``nn.Module.__init__``. A replacement's ``__init__`` calls the
    upstream's ``__init__`` directly (not ``super()``) so that the shim is reached only that way.
    """

    def __init__(self):
        nn.Module.__init__(self)


def publish(cls: type, module_name: str, name: str) -> type:
    """Make a run-time subclass picklable by reference as ``module_name.name``.

    Upstreams that ``torch.save`` the whole model pickle its class by module and name, so the class
    must be reachable there (also when a later run ``torch.load``s the checkpoint).
    """
    cls.__module__, cls.__qualname__, cls.__name__ = module_name, name, name
    setattr(sys.modules[module_name], name, cls)
    return cls


def named(cls: type, name: str) -> type:
    """Give a run-time subclass a readable name (reprs, error messages)."""
    cls.__name__ = cls.__qualname__ = name
    return cls


def module_classes(*modules) -> list[type]:
    """Every ``nn.Module`` subclass defined or imported at the top of ``modules``."""
    found = []
    for module in modules:
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, nn.Module) and value not in found:
                found.append(value)
    return found


def checkpoint_allow_list(*upstream_modules) -> list:
    """What a pickled whole-model checkpoint of an upstream may hold: torch's own layers, the
    upstream's model classes, ours (published run-time classes, the core's fusion modules).
    Loading with ``weights_only=True`` inside ``torch.serialization.safe_globals(...)`` of this list
    refuses anything else — a planted pickle that would run code is refused, not run."""
    import torch.nn.modules as torch_modules

    import simam2.core as core

    torch_layers = []
    for name in dir(torch_modules):
        value = getattr(torch_modules, name)
        if isinstance(value, type) and issubclass(value, nn.Module):
            torch_layers.append(value)
    ours = [v for m in list(sys.modules.values()) if getattr(m, "__name__", "").startswith(core.__name__)
            for v in vars(m).values() if isinstance(v, type) and v.__module__.startswith(core.__name__)]
    return torch_layers + module_classes(*upstream_modules) + list(dict.fromkeys(ours)) + [set]


def allow_checkpoints(run, *upstream_modules) -> None:
    """For the length of ``run``: checkpoints load with ``weights_only=True`` and the allow list above."""
    import torch

    allowed = checkpoint_allow_list(*upstream_modules)
    scope = torch.serialization.safe_globals(allowed)
    scope.__enter__()
    run.add_cleanup(lambda: scope.__exit__(None, None, None))
