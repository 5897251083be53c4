"""BatchNorm recalibration (UNSIR's last step): running statistics fitted to synthetic noise
are replaced by those of real images, and nothing else in the model changes."""

from __future__ import annotations

import torch
from torch import nn

from worker.unlearning import _ops

CPU = torch.device("cpu")


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 8 * 8, 8),
        nn.BatchNorm1d(8),
        nn.Linear(8, 3),
    )


def _images(n: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(100, 160, (n, 1, 8, 8), generator=gen, dtype=torch.uint8)


def test_statistics_fitted_to_noise_are_replaced_by_the_images_own() -> None:
    images = _images(129, seed=1)  # a last batch of one: BatchNorm1d must not see it alone
    reference = _net()
    reference.train()
    with torch.no_grad():  # the real images' statistics: the average over the same batches
        for m in reference.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.momentum = None
        reference(_ops.to_input(images[:64]))
        reference(_ops.to_input(images[64:128]))

    net = _net()
    net.train()
    with torch.no_grad():  # what training on noise leaves behind
        net(torch.randn(64, 1, 8, 8) * 5 + 3)
    weights = {
        k: v.clone()
        for k, v in net.state_dict().items()
        if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))
    }
    net.eval()

    assert _ops.recalibrate_batchnorm(net, images, CPU, batch_size=64) == 2
    for (name, got), want in zip(
        net.state_dict().items(), reference.state_dict().values(), strict=True
    ):
        if name.endswith(("running_mean", "running_var")):
            assert torch.allclose(got, want, atol=1e-4), name
    assert all(torch.equal(net.state_dict()[k], v) for k, v in weights.items())
    assert not net.training  # the caller's mode is kept
    bn = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert all(m.momentum == 0.1 for m in bn)


def test_a_model_without_batchnorm_is_left_alone() -> None:
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    assert _ops.recalibrate_batchnorm(net, _images(10, seed=2), CPU) == 0
    assert all(torch.equal(net.state_dict()[k], v) for k, v in before.items())
