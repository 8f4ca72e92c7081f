"""``simam2 run``'s torchrun options: parsed with the run's own, handed to torchrun as they are.

Multi-node is torchrun's own business: ``--nnodes``, ``--node-rank``, ``--rdzv-*`` and
``--master-*`` mean what they mean to ``torchrun`` (docs/distributed.md has an example).
"""

from __future__ import annotations

import argparse
import socket

from .machinery import AdapterError

#: (our option, its dest, type, help); each goes to torchrun under the same name
LAUNCH_OPTIONS = (
    ("--nproc-per-node", "nproc_per_node", int, "run the script as N processes on this node under torchrun "
                                                 "(DDP; gloo on CPU, NCCL with one GPU per process)"),
    ("--nnodes", "nnodes", str, "torchrun's --nnodes: nodes in the job (N or MIN:MAX)"),
    ("--node-rank", "node_rank", int, "torchrun's --node-rank (static rendezvous)"),
    ("--rdzv-backend", "rdzv_backend", str, "torchrun's --rdzv-backend (c10d for a multi-node job)"),
    ("--rdzv-endpoint", "rdzv_endpoint", str, "torchrun's --rdzv-endpoint HOST:PORT"),
    ("--rdzv-id", "rdzv_id", str, "torchrun's --rdzv-id: the job's id, the same on every node"),
    ("--master-addr", "master_addr", str, "torchrun's --master-addr (static rendezvous)"),
    ("--master-port", "master_port", int, "torchrun's --master-port (static rendezvous)"),
)
METAVARS = {"nproc_per_node": "N", "nnodes": "N[:M]", "node_rank": "RANK", "rdzv_backend": "BACKEND",
            "rdzv_endpoint": "HOST:PORT", "rdzv_id": "ID", "master_addr": "HOST", "master_port": "PORT"}


def add_launch_options(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("more than one process (torchrun)")
    for flag, dest, type_, help_ in LAUNCH_OPTIONS:
        g.add_argument(flag, dest=dest, type=type_, default=None, help=help_, metavar=METAVARS[dest])


def launch_requested(ns: argparse.Namespace) -> bool:
    """Whether the command line asks for torchrun; refuses its options without --nproc-per-node."""
    given = [flag for flag, dest, *_ in LAUNCH_OPTIONS if getattr(ns, dest, None) is not None]
    if given and getattr(ns, "nproc_per_node", None) is None:
        raise AdapterError(f"{given[0]} launches under torchrun: add --nproc-per-node N")
    if ns.nproc_per_node is not None and ns.nproc_per_node < 1:
        raise AdapterError(f"--nproc-per-node must be at least 1, got {ns.nproc_per_node}")
    return bool(given)


def single_node(ns: argparse.Namespace) -> bool:
    return ns.nnodes in (None, "1", "1:1")


def torchrun_argv(ns: argparse.Namespace) -> list[str]:
    """torchrun's options for the parsed command line. One node with no address given rendezvous
    on loopback at a free port (torchrun's ``--standalone``); otherwise the options go as they are,
    after a check that a single node's own port is free (a port in use would leave torchrun waiting)."""
    out = []
    for flag, dest, *_ in LAUNCH_OPTIONS:
        value = getattr(ns, dest)
        if value is not None:
            out += [flag, str(value)]
    addressed = any(getattr(ns, d) is not None for d in ("rdzv_endpoint", "master_port", "master_addr", "rdzv_backend"))
    if single_node(ns) and not addressed:
        return out + ["--standalone"]
    if single_node(ns):
        host, port = _own_address(ns)
        if port is not None:
            check_port_free(host, port, "--rdzv-endpoint" if ns.rdzv_endpoint else "--master-port")
    return out


#: torchrun's ports where none is given: the c10d endpoint's, the static rendezvous's
DEFAULT_RDZV_PORT, DEFAULT_MASTER_PORT = 29400, 29500


def _own_address(ns) -> tuple[str, int | None]:
    if ns.rdzv_endpoint:
        host, _, port = ns.rdzv_endpoint.rpartition(":")
        if not host:
            return ns.rdzv_endpoint, DEFAULT_RDZV_PORT
        try:
            return host, int(port)
        except ValueError:
            raise AdapterError(f"--rdzv-endpoint {ns.rdzv_endpoint}: the port must be a number (HOST:PORT)") from None
    if ns.rdzv_backend not in (None, "static"):
        return "127.0.0.1", None  # a rendezvous backend without an endpoint: torchrun says what it needs
    return ns.master_addr or "127.0.0.1", ns.master_port or DEFAULT_MASTER_PORT


def check_port_free(host: str, port: int, option: str) -> None:
    """Refuse a port that something already listens on (on a single node the job's store binds it)."""
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, port))
    except OSError as e:
        if e.errno in (98, 48, 10048):  # EADDRINUSE on Linux, macOS, Windows
            raise AdapterError(f"{option}: port {port} on {host} is in use; choose another, or give no address "
                               "on one node to have a free port picked") from None
        raise AdapterError(f"{option}: cannot bind {host}:{port} on this node ({e.strerror or e})") from None
