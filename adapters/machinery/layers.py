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
