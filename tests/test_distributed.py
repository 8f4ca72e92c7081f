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
        self.fusion = SimAM2(8, zeta="learnable")
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
                            fusion=net.fusion, alpha=0.5, mode="ogm_ge")  # seed drawn, shared from rank 0
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
