"""The distributed layer: an upstream's own script as one rank of a torchrun job, unchanged.

Upstream scripts hard-code ``torch.nn.DataParallel`` and build their loaders with ``DataLoader``.
Under :func:`distributed_layer` (installed around :func:`~.install.run_script` in each rank, through
:func:`~.install.patched`, and undone afterwards):

- ``torch.nn.DataParallel`` is :class:`DistributedDataParallel`: the model on the process's device,
  its gradients averaged over ranks at each backward;
- ``torch.utils.data.DataLoader`` is :class:`ShardedDataLoader`: a *shuffling* loader (the training
  one) draws through a ``DistributedSampler`` — each rank its own share of every epoch's permutation,
  reshuffled each epoch (``set_epoch`` at each pass) — with ``batch_size / world_size`` samples per
  rank, so that the script's ``--batch_size`` keeps the meaning it had under DataParallel: the
  samples of one optimizer step, over all devices. A loader that does not shuffle (evaluation) is
  left whole: every rank evaluates the whole test set in the script's own order and batches, with
  identical parameters, so the numbers are those of one process on the same checkpoint; rank 0
  records them.
- only rank 0 writes: ``torch.save`` to a path is atomic on rank 0 (a temporary sibling, then a
  rename: a failed or interrupted save leaves no half-written checkpoint) and skipped on the other
  ranks; TensorBoard's ``SummaryWriter`` writes nothing on the other ranks; their standard output
  is dropped (errors, on standard error, still show); an upstream's ``os.mkdir`` of a folder that
  another rank made first is not an error. Records are written by rank 0 alone (:func:`rank_config`).

BatchNorm is not synchronised: each rank normalises its own samples, as each device's replica does
under ``nn.DataParallel``. SimAM²'s statistics (ζ's batch variance, Eq. 6) and the modulator's
ratios are reduced over ranks by the core itself.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler

from .config import RunConfig
from .install import AdapterError, Replacement, patched

BACKENDS = ("gloo", "nccl")


@dataclass(frozen=True)
class Rank:
    """This process's place in the job, from torchrun's environment."""

    rank: int
    world_size: int
    local_rank: int
    backend: str

    @classmethod
    def from_env(cls, backend: str) -> "Rank":
        if backend not in BACKENDS:
            raise AdapterError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        missing = [k for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK") if k not in os.environ]
        if missing:
            raise AdapterError(f"no torchrun environment ({', '.join(missing)} unset): start distributed runs "
                               "with simam2 run NAME --nproc-per-node N")
        return cls(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"]), backend)

    @property
    def device(self) -> torch.device:
        """The process's device: its one visible GPU under NCCL (see :func:`pin_gpu`), else the CPU."""
        return torch.device("cuda", 0) if self.backend == "nccl" else torch.device("cpu")


def pin_gpu(local_rank: int) -> None:
    """Make the local rank's GPU the only one this process sees, before CUDA starts.

    Upstream scripts put everything on ``cuda:0`` and some set ``CUDA_VISIBLE_DEVICES`` themselves
    (OGM-GE's main.py, from ``--gpu_ids``): with one GPU visible and CUDA initialised here, their
    ``cuda:0`` is the rank's own GPU and their later setting has no effect.
    """
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = [s.strip() for s in visible.split(",") if s.strip()] if visible else None
    if ids is not None and local_rank >= len(ids):
        raise AdapterError(f"local rank {local_rank} has no GPU: CUDA_VISIBLE_DEVICES={visible} names {len(ids)}")
    os.environ["CUDA_VISIBLE_DEVICES"] = ids[local_rank] if ids is not None else str(local_rank)
    torch.cuda.set_device(0)
    torch.cuda.init()


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt(f"terminated by signal {signum}")


@contextlib.contextmanager
def process_group(rank: Rank) -> Iterator[None]:
    """Join the job's process group (torchrun's ``env://``) for the block.

    SIGTERM — what torchrun sends the other ranks when one fails — and SIGHUP become KeyboardInterrupt, so
    that the run's blocks unwind: the records end with ``interrupted``, a checkpoint being written
    is discarded.
    """
    if rank.backend == "nccl":
        pin_gpu(rank.local_rank)
    old = {s: signal.signal(s, _raise_interrupt) for s in (signal.SIGTERM, signal.SIGHUP)}
    dist.init_process_group(rank.backend)
    ok = False
    try:
        yield
        ok = True
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
        if ok or rank.backend == "gloo":  # an NCCL group whose peer died can hang in teardown
            dist.destroy_process_group()


def rank_config(config: RunConfig, rank: int) -> RunConfig:
    """The run's config on ``rank``: rank 0 writes the records and TensorBoard curves, the others
    keep their records in memory."""
    if rank == 0:
        return config
    return replace(config, record=None, append=False, tensorboard=None)


# -- what takes the place of the upstream's DataParallel, DataLoader and writes ---------------------

def _ddp_class(rank: Rank) -> type:
    class DistributedDataParallel(torch.nn.parallel.DistributedDataParallel):
        """``nn.DataParallel``'s place under torchrun: the module on the process's device, gradients
        averaged over ranks. DataParallel's ``device_ids``/``output_device`` are the script's
        choice of GPUs in one process; here each process has its own, so they are ignored."""

        def __init__(self, module, device_ids=None, output_device=None, dim=0):
            module.to(rank.device)
            ids = [rank.device.index] if rank.device.type == "cuda" else None
            super().__init__(module, device_ids=ids)

    return DistributedDataParallel


def _loader_class(rank: Rank, seed: int) -> type:
    world = rank.world_size

    class ShardedDataLoader(DataLoader):
        """A shuffling loader drawn through a DistributedSampler (``set_epoch`` at each pass), with the
        script's batch split over the ranks; any other loader as the script built it."""

        def __init__(self, dataset, batch_size=1, shuffle=None, sampler=None, *args, **kwargs):
            self._sharded = bool(shuffle) and sampler is None and kwargs.get("batch_sampler") is None
            if self._sharded:
                if batch_size is None or batch_size % world:
                    raise AdapterError(f"--batch_size {batch_size} does not split over {world} processes: it is the "
                                       f"batch of one step over all of them, as under nn.DataParallel; "
                                       f"use a multiple of {world}")
                sampler = DistributedSampler(dataset, num_replicas=world, rank=rank.rank, shuffle=True, seed=seed)
                batch_size, shuffle = batch_size // world, None
            self._passes = 0
            super().__init__(dataset, batch_size, shuffle, sampler, *args, **kwargs)

        def __iter__(self):
            if self._sharded:
                self.sampler.set_epoch(self._passes)  # each pass (epoch) its own permutation, the same on every rank
                self._passes += 1
            return super().__iter__()

    return ShardedDataLoader


def atomic_save(save):
    """``torch.save`` that writes a path through a temporary sibling and a rename (other targets,
    such as buffers, as ``save`` does): a save that fails or is interrupted leaves no file."""

    def atomic(obj, f, *args, **kwargs):
        if not isinstance(f, (str, os.PathLike)):
            return save(obj, f, *args, **kwargs)
        path = Path(f)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            save(obj, tmp, *args, **kwargs)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    return atomic


def _skip_save(save):
    def skipped(obj, f, *args, **kwargs):
        if not isinstance(f, (str, os.PathLike)):
            return save(obj, f, *args, **kwargs)  # into memory: harmless, and the script may read it back
        return None

    return skipped


class _NullWriter:
    """TensorBoard's SummaryWriter on ranks other than 0: accepts everything, writes nothing."""

    def __init__(self, *args, **kwargs):
        pass

    def __getattr__(self, name):
        return lambda *args, **kwargs: None


def _shared_mkdir(mkdir, checkout: Path):
    """``os.mkdir`` for which a folder another rank made first is no error, when the upstream's own
    code calls it (``if not exists: mkdir`` races between ranks); everyone else keeps mkdir's errors."""
    checkout = str(checkout)

    def shared(path, mode=0o777, *, dir_fd=None):
        try:
            return mkdir(path, mode, dir_fd=dir_fd)
        except FileExistsError:
            caller = sys._getframe(1).f_code.co_filename
            if dir_fd is None and os.path.isdir(path) and caller.startswith(checkout):
                return None
            raise

    return shared


def distributed_replacements(rank: Rank, seed: int, checkout: Path) -> list[Replacement]:
    ddp = _ddp_class(rank)
    reps = [
        Replacement("torch.nn", "DataParallel", ddp),
        Replacement("torch.nn.parallel", "DataParallel", ddp),
        Replacement("torch.utils.data", "DataLoader", _loader_class(rank, seed)),
        Replacement("torch", "save", atomic_save(torch.save) if rank.rank == 0 else _skip_save(torch.save)),
        Replacement("os", "mkdir", _shared_mkdir(os.mkdir, checkout)),
    ]
    if rank.rank != 0:
        import importlib

        with contextlib.suppress(ImportError):  # torch.utils.tensorboard needs the tensorboard package
            importlib.import_module("torch.utils.tensorboard")
            reps.append(Replacement("torch.utils.tensorboard", "SummaryWriter", _NullWriter))
    return reps


@contextlib.contextmanager
def distributed_layer(rank: Rank, seed: int, checkout: Path) -> Iterator[None]:
    """The replacements above for the block, and rank 0's standard output alone."""
    with contextlib.ExitStack() as stack:
        if rank.rank != 0:
            stack.enter_context(contextlib.redirect_stdout(stack.enter_context(open(os.devnull, "w"))))
        stack.enter_context(patched(distributed_replacements(rank, seed, checkout)))
        yield


__all__ = ["BACKENDS", "Rank", "atomic_save", "distributed_layer", "distributed_replacements", "pin_gpu",
           "process_group", "rank_config"]
