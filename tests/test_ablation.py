"""Mean ablation at the fusion input (SPEC §8) on a model whose outputs are known by hand."""

from __future__ import annotations

import torch
from torch import nn

from simam2.adapters.machinery.ablation import MeanAblation, RunningMean, restored_attributes
from simam2.core import SimAM2


def head(x1, x2):
    """Two classes: logit 0 is x1 + x2, logit 1 is 0 — class 0 exactly when x1 + x2 > 0."""
    return torch.stack([(x1 + x2).squeeze(1), torch.zeros(x1.shape[0])], 1)


def accuracy(logits, labels):
    return (logits.argmax(1) == labels).float().mean().item()


# evaluation samples (x1, x2) and labels; fused x1 + x2 = 2, 2, 2, −4: all four right
EVAL_X1 = torch.tensor([[1.0], [-1.0], [3.0], [-3.0]])
EVAL_X2 = torch.tensor([[1.0], [3.0], [-1.0], [-1.0]])
LABELS = torch.tensor([0, 0, 0, 1])


def test_training_mean_gives_the_hand_computed_accuracy_of_each_modality_alone():
    ab = MeanAblation()
    ab.start_training()
    ab.observe_training(torch.tensor([[1.0]]), torch.tensor([[-4.0]]))  # two batches: x1 mean 2,
    ab.observe_training(torch.tensor([[3.0], [2.0]]), torch.tensor([[0.0], [-2.0]]))  # x2 mean −2
    ab.end_training()
    assert ab.means[0].item() == 2.0 and ab.means[1].item() == -2.0
    for i in (slice(0, 3), slice(3, 4)):  # two evaluation batches
        ab.evaluate(head, EVAL_X1[i], EVAL_X2[i])
    alone = ab.take(head)
    assert alone.source == "train" and alone.why is None
    assert accuracy(head(EVAL_X1, EVAL_X2), LABELS) == 1.0
    # audio alone, x2 := −2: x1 − 2 = −1, −3, 1, −5 -> classes 1, 1, 0, 1: right on samples 3, 4
    assert alone.m1[:, 0].tolist() == [-1.0, -3.0, 1.0, -5.0]
    assert accuracy(alone.m1, LABELS) == 0.5
    # x1 := 2: 2 + x2 = 3, 5, 1, 1 -> class 0 throughout: right on samples 1, 2, 3
    assert accuracy(alone.m2, LABELS) == 0.75


def test_without_training_the_evaluation_sets_mean_is_used():
    ab = MeanAblation()
    ab.evaluate(head, EVAL_X1[:2], EVAL_X2[:2])
    ab.evaluate(head, EVAL_X1[2:], EVAL_X2[2:])
    alone = ab.take(head)
    # means over the evaluation set: x1 0, x2 0.5
    assert alone.source == "eval"
    assert alone.m1[:, 0].tolist() == [1.5, -0.5, 3.5, -2.5]  # classes 0, 1, 0, 1
    assert accuracy(alone.m1, LABELS) == 0.75
    assert alone.m2[:, 0].tolist() == [1.0, 3.0, -1.0, -1.0]  # classes 0, 0, 1, 1
    assert accuracy(alone.m2, LABELS) == 0.75
    assert ab.take(head).why == "no evaluation batch reached the fusion"  # the pass was reset


def test_a_new_epoch_replaces_the_mean_and_a_shape_change_is_said():
    ab = MeanAblation()
    ab.start_training()
    ab.observe_training(torch.ones(4, 3), torch.zeros(4, 3))
    ab.end_training()
    ab.start_training()
    ab.observe_training(torch.full((2, 3), 5.0), torch.full((2, 3), 7.0))
    ab.end_training()
    assert ab.means[0].tolist() == [5.0] * 3 and ab.means[1].tolist() == [7.0] * 3
    ab.evaluate(lambda a, b: a + b, torch.zeros(2, 4), torch.zeros(2, 4))
    alone = ab.take(lambda a, b: a + b)
    assert alone.m1 is None and "mean fusion input has shape (3,)" in alone.why


def test_half_precision_inputs_accumulate_in_float32():
    mean = RunningMean()
    for _ in range(3000):  # 3000 × 1.0 in float16 would stop at 2048
        mean.add(torch.ones(1, 2, dtype=torch.float16))
    assert mean.total.dtype == torch.float32 and mean.mean().tolist() == [1.0, 1.0]


def test_ablated_forwards_leave_simam2s_last_forward_as_the_fused_one():
    torch.manual_seed(0)
    fusion = SimAM2(6, zeta_mode="learnable").eval()
    x1, x2 = torch.randn(5, 6), torch.randn(5, 6)
    fused = fusion(x1, x2)
    weights, r = fusion.weights, fusion.r
    ab = MeanAblation(preserve=[fusion])
    ab.means = (torch.zeros(6), torch.ones(6))
    ab.evaluate(fusion, x1, x2)
    assert fusion.weights is weights and fusion.r is r
    assert torch.equal(fusion(x1, x2), fused)
    alone = ab.take(fusion)
    assert not torch.equal(alone.m1, fused) and torch.equal(alone.m1, fusion(x1, torch.ones(5, 6)))

    class Keeps(nn.Module):
        def __init__(self):
            super().__init__()
            self.last = None

        def forward(self, x):
            self.last = x
            return x

    k = Keeps()
    k(torch.zeros(1))
    with restored_attributes([k]):
        k(torch.ones(1))
    assert k.last.item() == 0.0
