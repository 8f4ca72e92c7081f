"""Whether this process is one of several ranks of a torch.distributed job."""

from __future__ import annotations

import torch.distributed as dist


def is_distributed() -> bool:
    """True under an initialised process group of more than one rank (DDP), else False."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
