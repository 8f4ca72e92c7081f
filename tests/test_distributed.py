"""SPEC §3 and §5 under data parallelism: var_max grows under DataParallel; under DDP every rank
holds the same var_max, computes the same r and ends with identical parameters."""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from simam2.core import GradientModulator, SimAM2


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.audio = nn.Linear(6, 8)
        self.visual = nn.Linear(6, 8)
        self.fusion = SimAM2(8, zeta_mode="learnable")
        self.head = nn.Linear(8, 3)

    def forward(self, a, v):
        return self.head(self.fusion(self.audio(a), self.visual(v)))


def test_data_parallel_var_max_grows():
    net = Net()
    dp = nn.DataParallel(net)
    a, v = torch.randn(2, 16, 6)
    dp(a, v)
    assert torch.count_nonzero(net.fusion.var_max) == 8
    torch.testing.assert_close(net.fusion.var_max, net.fusion.zeta.var(0, unbiased=False))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(0)  # same initial weights on both ranks
    net = Net()
    model = nn.parallel.DistributedDataParallel(net)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    mod = GradientModulator({"audio": net.audio.parameters(), "visual": net.visual.parameters()},
                            fusion=net.fusion, alpha=0.5, noise=True)  # seed drawn, shared from rank 0
    mod.attach(opt)
    gen = torch.Generator().manual_seed(100 + rank)  # each rank its own data
    rs = []
    for _ in range(4):
        a, v = torch.randn(2, 8, 6, generator=gen) * (1 + rank)
        y = torch.randint(0, 3, (8,), generator=gen)
        opt.zero_grad()
        nn.functional.cross_entropy(model(a, v), y).backward()
        opt.step()
        rs.append(net.fusion.r.clone())
    torch.save({"params": [p.detach().clone() for p in net.parameters()], "var_max": net.fusion.var_max.clone(),
                "r": torch.stack(rs), "k": torch.stack([mod.last["k1"], mod.last["k2"]])},
               os.path.join(out_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available in this build")
def test_ddp_ranks_stay_identical(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{i}.pt") for i in range(2))
    assert torch.count_nonzero(r0["var_max"]) > 0
    torch.testing.assert_close(r0["var_max"], r1["var_max"], rtol=0, atol=0)
    torch.testing.assert_close(r0["r"], r1["r"], rtol=0, atol=0)
    torch.testing.assert_close(r0["k"], r1["k"], rtol=0, atol=0)
    assert (r0["k"] < 1).any()  # modulation (and GE noise) really ran
    for p, q in zip(r0["params"], r1["params"]):
        torch.testing.assert_close(p, q, rtol=0, atol=0)


def _fault_worker(rank: int, world: int, port: int, out_dir: str, bad: float = float("nan")) -> None:
    """Three training forwards: clean on both ranks; a NaN (or inf) sample on rank 1; an empty batch on rank 0."""
    import warnings

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(0)  # same gate on both ranks
    fusion = SimAM2(4, zeta_mode="learnable")
    gen = torch.Generator().manual_seed(200 + rank)
    seen = []
    for step in range(3):
        x1, x2 = torch.randn(2, 6, 4, 5, generator=gen)
        if step == 1 and rank == 1:
            x1[2, 0, 0] = bad
        if step == 2:  # rank 0's share of the batch is empty (not an error under DDP); rank 1's spreads ζ more
            x1, x2 = (x1[:0], x2[:0]) if rank == 0 else (x1 * 20, x2 * 20)
        with warnings.catch_warnings(record=True):
            warnings.simplefilter("always")
            fusion(x1, x2)
        seen.append({"var_max": fusion.var_max.clone(), "skipped": fusion.skipped_updates.clone(),
                     "zeta": fusion.zeta.clone()})
    torch.save(seen, os.path.join(out_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available in this build")
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_ddp_ranks_skip_a_nan_batch_together_and_accept_an_empty_share(tmp_path, bad):
    """An inf on one rank saturates that rank's ζ into finite statistics: skipped on both ranks too."""
    mp.spawn(_fault_worker, args=(2, _free_port(), str(tmp_path), bad), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{i}.pt") for i in range(2))
    for a, b in zip(r0, r1):  # one decision on every rank
        torch.testing.assert_close(a["var_max"], b["var_max"], rtol=0, atol=0)
        assert a["skipped"].item() == b["skipped"].item()
    first = torch.cat([r0[0]["zeta"], r1[0]["zeta"]]).var(0, unbiased=False)  # the all-reduced var_b
    torch.testing.assert_close(r0[0]["var_max"], first)
    torch.testing.assert_close(r0[1]["var_max"], r0[0]["var_max"], rtol=0, atol=0)  # was nan on both ranks
    assert [s["skipped"].item() for s in r0] == [0, 1, 1]
    third = r1[2]["zeta"].var(0, unbiased=False)  # rank 0 contributed no sample
    torch.testing.assert_close(r0[2]["var_max"], torch.maximum(first, third))
    assert (third > first).any()  # the test would not see the third update otherwise
