"""KODGE (Kodge, Saha, Roy, TMLR 2024), following the official code
(github.com/sangamesh-kodge/class_forgetting: ``our_unlearn``, ``forward_cache_projections``,
``get_projection_matrix``, ``project_weights``).

1. With the model in eval mode, record the input of every ``Conv2d`` (as unfolded patches,
   from a random ``3k x 3k`` window when the map is larger, at most ``max_patches`` rows) and
   every ``Linear`` layer, once on a retain sample (``samples`` images spread over the
   retained classes) and once on up to ``samples`` forget images.
2. Per layer, ``U, S = svd(inputs^T)`` (here from the eigen-decomposition of
   ``inputs^T inputs``: the same ``U`` and ``S``, much faster on a CPU),
   ``s = S**2 / sum(S**2)`` and ``M = U diag(a s / ((a - 1) s + 1)) U^T`` (``a = alpha_r`` retain, ``alpha_f`` forget).
3. ``P = I - (M_f - M_f M_r)`` and ``W <- W.flatten(1) @ P^T`` (biases unchanged).

Both samples are recorded on the original weights before any layer is projected, as in the
official code, which this module matches step for step (checked against its
``models/model_utils.py`` and ``main.py``); the only other differences are float64 for the
decomposition and a random rather than the first ``samples / (classes - 1)`` retain images per
class. Grouped convolutions are left as they are (their inputs do not unfold into one
matrix per layer); the details list which layers were projected.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from app.core.methods.kodge import SPEC, KodgeConfig
from worker.unlearning.base import MethodResult
from worker.unlearning.registry import register_runner

if TYPE_CHECKING:
    import torch
    from torch import nn

    from worker.unlearning.base import UnlearningInputs


def _layers(model: nn.Module) -> dict[str, nn.Module]:
    from torch import nn

    return {
        name: m
        for name, m in model.named_modules()
        if isinstance(m, nn.Linear) or (isinstance(m, nn.Conv2d) and m.groups == 1)
    }


def _conv_rows(
    x: torch.Tensor, conv: nn.Conv2d, max_rows: int, gen: torch.Generator
) -> torch.Tensor:
    """A layer input as patch rows ``[n, C*kh*kw]``, sampled like the official code."""
    import torch
    import torch.nn.functional as F

    kh, kw = conv.kernel_size
    if x.shape[-1] > 3 * kw and x.shape[-2] > 3 * kh:
        i = int(torch.randint(0, x.shape[-2] - 3 * kh + 1, (1,), generator=gen))
        j = int(torch.randint(0, x.shape[-1] - 3 * kw + 1, (1,), generator=gen))
        x = x[:, :, i : i + 3 * kh, j : j + 3 * kw]
    padding = conv.padding if isinstance(conv.padding, tuple) else (0, 0)
    cols = F.unfold(
        x, conv.kernel_size, dilation=conv.dilation, padding=padding, stride=conv.stride
    )
    rows = cols.permute(0, 2, 1).reshape(-1, cols.shape[1])
    keep = torch.randperm(rows.shape[0], generator=gen)[:max_rows]
    return rows[keep.to(rows.device)]


Directions = dict[str, tuple["torch.Tensor", "torch.Tensor"]]
"""Layer name -> (left singular vectors ``U``, singular values ``S``) of its inputs."""


def _svd_directions(
    model: nn.Module, x: torch.Tensor, max_rows: int, gen: torch.Generator
) -> Directions:
    """``U, S`` of the inputs every layer sees on ``x`` (one forward pass). They do not depend
    on the scalings, so a sweep over ``alpha_r, alpha_f`` decomposes once (as the official
    ``analysis/tune_our.py`` does)."""
    import torch
    from torch import nn

    inputs: dict[str, torch.Tensor] = {}

    def hook(name: str, module: nn.Module) -> Callable[[nn.Module, tuple[torch.Tensor, ...]], None]:
        def record(_m: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            a = args[0].detach()
            if isinstance(module, nn.Conv2d):
                inputs[name] = _conv_rows(a, module, max_rows, gen)
            else:
                inputs[name] = a.reshape(-1, a.shape[-1])

        return record

    handles = [m.register_forward_pre_hook(hook(n, m)) for n, m in _layers(model).items()]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    out: Directions = {}
    for name, rows in inputs.items():
        # U and S of svd(rows^T) from the eigen-decomposition of the small Gram matrix
        # rows^T rows (features x features): the same directions and energies, without the
        # right singular vectors (one per row, up to max_patches of them) that svd computes
        a = rows.double()
        energy, u = torch.linalg.eigh(a.T @ a)
        out[name] = (u, energy.clamp_min(0).sqrt())
    return out


def _scaled(u: torch.Tensor, s: torch.Tensor, alpha: float) -> torch.Tensor:
    """``M = U diag(a r / ((a - 1) r + 1)) U^T`` with ``r`` each direction's energy share."""
    energy = s.pow(2)
    ratio = energy / energy.sum().clamp_min(1e-300)
    importance = alpha * ratio / ((alpha - 1) * ratio + 1)
    return (u * importance) @ u.T


def project(
    model: nn.Module, retain: Directions, forget: Directions, alpha_r: float, alpha_f: float
) -> dict[str, float]:
    """``W <- W (I - (M_f - M_f M_r))^T`` for every recorded layer, in place; returns each
    layer's relative weight change."""
    import torch

    layers = _layers(model)
    removed: dict[str, float] = {}
    with torch.no_grad():
        for name, (uf, sf) in forget.items():
            mf = _scaled(uf, sf, alpha_f)
            mr = _scaled(*retain[name], alpha_r)
            proj = torch.eye(mf.shape[0], dtype=mf.dtype, device=mf.device) - (mf - mf @ mr)
            weight = layers[name].weight
            assert isinstance(weight, torch.Tensor)
            flat = weight.detach().flatten(1).double()
            new = flat @ proj.T
            removed[name] = float((flat - new).norm() / flat.norm().clamp_min(1e-12))
            weight.copy_(new.to(weight.dtype).view_as(weight))
    return removed


def _retain_sample(
    labels: torch.Tensor, classes: list[int], total: int, gen: torch.Generator
) -> torch.Tensor:
    import torch

    per_class = max(1, total // max(1, len(classes)))
    picked = []
    for c in classes:
        idx = (labels == c).nonzero().squeeze(1)
        picked.append(idx[torch.randperm(idx.numel(), generator=gen)[:per_class]])
    return torch.cat(picked) if picked else torch.empty(0, dtype=torch.long)


def directions(
    inputs: UnlearningInputs, config: KodgeConfig
) -> tuple[Directions, Directions, int, int]:
    """Both samples' directions, recorded on the original weights before any layer is
    projected (as the official code), and the sample sizes."""
    import torch

    from worker.unlearning import _ops

    _ops.require(inputs.forget_images, inputs.forget_labels, "forget", "kodge")
    _ops.require(inputs.retain_images, inputs.retain_labels, "retain", "kodge")
    gen = _ops.seed_all(inputs.seed)
    model, device = inputs.model, inputs.device
    forget_set = set(inputs.forget_classes)
    retained = [c for c in range(inputs.num_classes) if c not in forget_set]
    keep = _retain_sample(inputs.retain_labels, retained, config.samples, gen)
    if keep.numel() < 2:
        raise ValueError("kodge needs at least two retain images")
    nf = int(inputs.forget_images.shape[0])
    fidx = torch.randperm(nf, generator=gen)[: config.samples]
    with _ops.eval_mode(model):
        xr = _ops.to_input(inputs.retain_images[keep].to(device))
        retain = _svd_directions(model, xr, config.max_patches, gen)
        xf = _ops.to_input(inputs.forget_images[fidx].to(device))
        forget = _svd_directions(model, xf, config.max_patches, gen)
    return retain, forget, int(keep.numel()), int(fidx.numel())


def run(inputs: UnlearningInputs, config: KodgeConfig) -> MethodResult:
    from worker.unlearning import _ops

    progress = _ops.Progress(inputs.progress, 2)
    progress.start("svd")
    retain, forget, n_retain, n_forget = directions(inputs, config)
    progress.advance("project")
    removed = project(inputs.model, retain, forget, config.alpha_r, config.alpha_f)
    progress.finish()
    return MethodResult(
        details={
            "projected_layers": sorted(removed),
            "relative_weight_change": {k: _ops.finite_or_none(v) for k, v in removed.items()},
            "retain_samples": n_retain,
            "forget_samples": n_forget,
            "alpha_r": config.alpha_r,
            "alpha_f": config.alpha_f,
        }
    )


register_runner(SPEC.name, run)
