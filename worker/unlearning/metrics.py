"""Unlearning metrics from the method papers: layer-wise weight distances, where the forgotten
samples' predictions go, and relearn time. (Imports torch: the HTTP API never imports this.)"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from worker.unlearning import _ops

__all__ = ["layer_distances", "prediction_distribution", "relearn_epochs"]


@torch.no_grad()
def layer_distances(model_a: nn.Module, model_b: nn.Module) -> dict[str, dict[str, float]]:
    """Per parameter tensor (by name): ``{"l2": ||a - b||_2, "relative": ||a - b||_2 / ||b||_2}``.

    ``relative`` is 0.0 when both norms are 0, and ``inf`` when only ``b``'s norm is. Both models
    must have the same parameter names and shapes (``ValueError`` otherwise).
    """
    params_a = dict(model_a.named_parameters())
    params_b = dict(model_b.named_parameters())
    if params_a.keys() != params_b.keys():
        missing = sorted(params_a.keys() ^ params_b.keys())
        raise ValueError(f"models differ in their parameters: {missing[:10]}")
    out: dict[str, dict[str, float]] = {}
    for name, a in params_a.items():
        b = params_b[name]
        if a.shape != b.shape:
            raise ValueError(f"parameter {name}: shapes {tuple(a.shape)} != {tuple(b.shape)}")
        b64 = b.detach().double().cpu()
        l2 = float(torch.linalg.vector_norm(a.detach().double().cpu() - b64))
        norm = float(torch.linalg.vector_norm(b64))
        rel = l2 / norm if norm > 0 else (0.0 if l2 == 0 else math.inf)
        out[name] = {"l2": l2, "relative": rel}
    return out


def prediction_distribution(pred: Tensor, class_names: Sequence[str]) -> dict[str, float]:
    """Fraction of ``pred`` (class indices) that falls on each class, keyed by class name, in
    class order; all zeros for an empty ``pred``."""
    k = len(class_names)
    pred = pred.detach().reshape(-1).long().cpu()
    if pred.numel() and (int(pred.min()) < 0 or int(pred.max()) >= k):
        raise ValueError(f"predictions outside 0..{k - 1}")
    if pred.numel() == 0:
        return {name: 0.0 for name in class_names}
    counts = torch.bincount(pred, minlength=k).double() / pred.numel()
    return {name: float(counts[i]) for i, name in enumerate(class_names)}


def relearn_epochs(
    model: nn.Module,
    images_u8: Tensor,
    labels: Tensor,
    *,
    target_accuracy: float,
    max_epochs: int,
    lr: float,
    batch_size: int,
    seed: int,
    device: torch.device | str,
) -> int | None:
    """Relearn time: fine-tune a deep copy of ``model`` (SGD, momentum 0.9, constant ``lr``) on
    the forgotten samples until its accuracy on them reaches ``target_accuracy``.

    Returns the number of epochs needed (0 if the model already reaches it), ``None`` if
    ``max_epochs`` are not enough. ``model`` itself is left untouched.
    """
    _ops.check_pair(images_u8, labels, "relearn")
    if images_u8.shape[0] == 0:
        raise ValueError("relearn_epochs needs at least one image")
    device = torch.device(device)
    gen = _ops.seed_all(seed)
    labels = labels.long()
    net = copy.deepcopy(model).to(device)
    if (_ops.accuracy(net, images_u8, labels, device) or 0.0) >= target_accuracy:
        return 0
    opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=lr, momentum=0.9)
    for epoch in range(1, max_epochs + 1):
        net.train()
        for idx in _ops.batch_indices(images_u8.shape[0], batch_size, gen):
            x, y = _ops.load_batch(images_u8, labels, idx, device)
            loss = F.cross_entropy(net(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if (_ops.accuracy(net, images_u8, labels, device) or 0.0) >= target_accuracy:
            return epoch
    return None
