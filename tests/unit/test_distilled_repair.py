"""UNSIR's distilled repair: the parent's predictions with the forgotten class removed are the
target, so images the parent gave to that class move to their next class (as after a retrain)
and every other prediction is kept."""

from __future__ import annotations

import torch
from torch import nn

from worker.unlearning import _ops
from worker.unlearning.base import no_progress

CPU = torch.device("cpu")


def _net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))


def _images(n: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 1, 4, 4), generator=gen, dtype=torch.uint8)


def test_logits_without_a_class_give_it_no_probability_and_keep_the_rest() -> None:
    net, images = _net(0), _images(50, 1)
    full = _ops.logits_without(net, images, [], CPU)
    masked = _ops.logits_without(net, images, [2], CPU)
    assert torch.all(masked[:, 2] == float("-inf"))
    assert torch.equal(masked[:, [0, 1, 3]], full[:, [0, 1, 3]])
    ranked = full.clone()
    ranked[:, 2] = float("-inf")
    assert torch.equal(masked.argmax(1), ranked.argmax(1))  # the next class takes the share
    assert net.training  # the caller's mode is restored


def test_distillation_moves_the_removed_class_to_the_next_one() -> None:
    images = _images(256, 2)
    teacher = _net(0)
    target = _ops.logits_without(teacher, images, [2], CPU)
    student = _net(0)  # the parent itself, as UNSIR's repair starts close to it
    before = _ops.predict(student, images, CPU)
    assert int((before == 2).sum()) > 0  # the parent does give some images to class 2
    labels = target.argmax(1)
    _ops.train_supervised(
        student,
        images,
        labels,
        epochs=60,
        batch_size=64,
        optimizer=torch.optim.Adam(student.parameters(), lr=0.003),
        scheduler=None,
        device=CPU,
        generator=torch.Generator().manual_seed(0),
        progress=_ops.Progress(no_progress, 60 * 4),
        phase="repair",
        loss_fn=_ops.distilled_loss(target, weight=1.0, temperature=1.0),
    )
    after = _ops.predict(student, images, CPU)
    assert int((after == 2).sum()) == 0
    moved = before == 2
    # random images give this net near-ties, so "mostly" (chance would be one in three)
    moved_to_next = float((after[moved] == labels[moved]).float().mean())
    kept = float((after[~moved] == before[~moved]).float().mean())
    assert moved_to_next >= 0.75 and kept >= 0.9, (moved_to_next, kept)


def test_distill_kl_ignores_a_removed_class_in_the_teacher() -> None:
    student = torch.tensor([[2.0, 0.0, 1.0]])
    teacher = torch.tensor([[2.0, float("-inf"), 1.0]])
    loss = _ops.distill_kl(student, teacher, 1.0)
    assert torch.isfinite(loss) and float(loss) > 0
    # without the removed class in the student either, the two agree exactly
    same = _ops.distill_kl(torch.tensor([[2.0, -1e9, 1.0]]), teacher, 1.0)
    assert abs(float(same)) < 1e-6
