"""Adversarial class forgetting with a generator and a discriminator.

The model being unlearned is the *generator* (trained in place); a frozen copy of the original
model is the *reference*. An MLP *discriminator* on softmax outputs learns to tell the
generator's outputs on forget-class images ("fake") from the reference's outputs on retain
images ("real", i.e. retain-like). The generator is trained with the non-saturating GAN loss
(``-log D(softmax(G(x_forget)))``) so that the discriminator cannot tell them apart, plus a
cross-entropy term on retain batches that keeps its retain accuracy. Both use Adam (betas 0.5,
0.999), lr 1e-3, weight decay 5e-4, and a cosine schedule.

``details["discriminator_score"]`` is measured at the end, in eval mode, over the forget
images: the mean probability, given by the trained discriminator, that the generator's output
on a forget image is a *forget* output, i.e. ``mean(1 - D(softmax(G(x))))``. 1.0 means the
discriminator still tells forget outputs apart; 0.5 is chance; **below 0.5 means forgotten**
(the forget outputs pass for retain outputs). Also in ``details``: ``forget_misclassification_rate``
(forget images whose prediction is not their label), ``retain_accuracy`` (both on at most
``eval_max_samples`` seeded samples), ``discriminator_reference_retain_probability`` (mean D on the
reference's retain outputs) and ``discriminator_soft_accuracy`` (the balanced
``0.5 * (score + that)``, 0.5 = chance, insensitive to a biased discriminator).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from app.core.methods.adversarial import SPEC, AdversarialConfig
from worker.unlearning.base import MethodResult
from worker.unlearning.registry import register_runner

if TYPE_CHECKING:
    import torch
    from torch import nn

    from worker.unlearning import _ops
    from worker.unlearning.base import UnlearningInputs


@dataclass
class _Networks:
    model: nn.Module
    """The generator: the model being unlearned, trained in place."""
    reference: nn.Module
    """A frozen copy of the original model."""
    disc: nn.Module


@dataclass
class _Optimisers:
    gen: torch.optim.Optimizer
    disc: torch.optim.Optimizer
    gen_schedule: torch.optim.lr_scheduler.LRScheduler
    disc_schedule: torch.optim.lr_scheduler.LRScheduler


def make_discriminator(num_classes: int, hidden: int) -> nn.Module:
    from torch import nn

    return nn.Sequential(
        nn.Linear(num_classes, hidden),
        nn.LeakyReLU(0.2),
        nn.Linear(hidden, hidden),
        nn.LeakyReLU(0.2),
        nn.Linear(hidden, 1),
    )


def _frozen_copy(model: nn.Module) -> nn.Module:
    import copy

    reference = copy.deepcopy(model).eval()
    for p in reference.parameters():
        p.requires_grad_(False)
    return reference


def _make_optimisers(nets: _Networks, config: AdversarialConfig, total: int) -> _Optimisers:
    from worker.unlearning import _ops

    betas = (config.beta1, config.beta2)
    opt_g = _ops.make_optimizer(
        "adam", nets.model.parameters(), lr=config.lr, weight_decay=config.weight_decay, betas=betas
    )
    opt_d = _ops.make_optimizer(
        "adam",
        nets.disc.parameters(),
        lr=config.disc_lr,
        weight_decay=config.weight_decay,
        betas=betas,
    )
    return _Optimisers(
        gen=opt_g,
        disc=opt_d,
        gen_schedule=_ops.cosine_schedule(opt_g, total),
        disc_schedule=_ops.cosine_schedule(opt_d, total),
    )


def _update_discriminator(
    disc: nn.Module, opt: torch.optim.Optimizer, real: torch.Tensor, fake: torch.Tensor, steps: int
) -> torch.Tensor:
    """Real (reference on retain) -> 1, fake (generator on forget) -> 0; returns the last loss."""
    import torch
    import torch.nn.functional as F

    loss_d = torch.zeros(())
    for _ in range(steps):
        d_real, d_fake = disc(real), disc(fake.detach())
        loss_d = F.binary_cross_entropy_with_logits(
            d_real, torch.ones_like(d_real)
        ) + F.binary_cross_entropy_with_logits(d_fake, torch.zeros_like(d_fake))
        opt.zero_grad(set_to_none=True)
        loss_d.backward()
        opt.step()
    return loss_d


def _train_step(
    nets: _Networks,
    opts: _Optimisers,
    config: AdversarialConfig,
    forget_batch: torch.Tensor,
    retain_batch: tuple[torch.Tensor, torch.Tensor],
) -> dict[str, float]:
    """One discriminator update then one generator update; returns the step's losses."""
    import torch
    import torch.nn.functional as F

    xf = forget_batch
    xr, yr = retain_batch
    with torch.no_grad():
        real = F.softmax(nets.reference(xr), dim=1)
    out = nets.model(torch.cat([xf, xr]))  # one pass: BatchNorm sees both
    out_f, out_r = out[: xf.shape[0]], out[xf.shape[0] :]
    fake = F.softmax(out_f, dim=1)
    loss_d = _update_discriminator(nets.disc, opts.disc, real, fake, config.disc_steps)

    # generator: non-saturating loss (make D call its forget outputs real) + retain CE
    d_gen = nets.disc(fake)
    loss_adv = F.binary_cross_entropy_with_logits(d_gen, torch.ones_like(d_gen))
    loss_ret = F.cross_entropy(out_r, yr)
    loss_g = config.adversarial_weight * loss_adv + config.retain_weight * loss_ret
    opts.gen.zero_grad(set_to_none=True)
    loss_g.backward()
    opts.gen.step()
    opts.gen_schedule.step()
    opts.disc_schedule.step()
    return {
        "discriminator_loss": float(loss_d.detach()),
        "generator_adversarial_loss": float(loss_adv.detach()),
        "generator_retain_loss": float(loss_ret.detach()),
    }


def _train(
    inputs: UnlearningInputs,
    config: AdversarialConfig,
    nets: _Networks,
    gen: torch.Generator,
    progress: _ops.Progress,
    total: int,
) -> dict[str, float]:
    """The adversarial training loop, in train mode; returns the last step's losses."""
    from worker.unlearning import _ops

    device = inputs.device
    nf, nr = inputs.forget_images.shape[0], inputs.retain_images.shape[0]
    opts = _make_optimisers(nets, config, total)
    retain_batches = _ops.cycle_indices(nr, config.batch_size, gen)
    last: dict[str, float] = {}
    nets.model.train()
    nets.disc.train()
    for _ in range(config.epochs):
        for f_idx in _ops.batch_indices(nf, config.batch_size, gen):
            xf, _yf = _ops.load_batch(inputs.forget_images, inputs.forget_labels, f_idx, device)
            retain_batch = _ops.load_batch(
                inputs.retain_images, inputs.retain_labels, next(retain_batches), device
            )
            last = _train_step(nets, opts, config, xf, retain_batch)
            progress.advance("adversarial")
    return last


def _measure(
    net: nn.Module, disc: nn.Module, images: torch.Tensor, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Predictions of ``net`` on ``images`` and the discriminator's D on its softmax outputs."""
    import torch
    import torch.nn.functional as F

    from worker.unlearning import _ops

    preds, probs = [], []
    with torch.no_grad():
        for i in range(0, images.shape[0], 256):
            logits = net(_ops.to_input(images[i : i + 256].to(device)))
            preds.append(logits.argmax(1).cpu())
            probs.append(torch.sigmoid(disc(F.softmax(logits, dim=1))).squeeze(1).cpu())
    return torch.cat(preds), torch.cat(probs)


def _evaluate(
    inputs: UnlearningInputs,
    config: AdversarialConfig,
    nets: _Networks,
    gen: torch.Generator,
    progress: _ops.Progress,
) -> dict[str, object]:
    """Final measurements in eval mode, on at most ``eval_max_samples`` seeded samples."""
    import torch

    model, disc, device = nets.model, nets.disc, inputs.device
    model.eval()
    disc.eval()
    cap = config.eval_max_samples
    f_sel = torch.randperm(inputs.forget_images.shape[0], generator=gen)[:cap]
    r_sel = torch.randperm(inputs.retain_images.shape[0], generator=gen)[:cap]
    f_imgs, f_lbls = inputs.forget_images[f_sel], inputs.forget_labels[f_sel].long()
    r_imgs, r_lbls = inputs.retain_images[r_sel], inputs.retain_labels[r_sel].long()

    f_pred, f_real_prob = _measure(model, disc, f_imgs, device)
    progress.advance("evaluate")
    r_pred, _ = _measure(model, disc, r_imgs, device)
    _, ref_real_prob = _measure(nets.reference, disc, r_imgs, device)
    progress.advance("evaluate")
    score = float((1.0 - f_real_prob).mean())
    return {
        "discriminator_score": score,
        "discriminator_score_definition": (
            "mean over forget images of the discriminator's probability that the "
            "generator's output is a forget output (1 - D); below 0.5 means forgotten"
        ),
        "forget_misclassification_rate": float((f_pred != f_lbls).float().mean()),
        "retain_accuracy": float((r_pred == r_lbls).float().mean()),
        "discriminator_reference_retain_probability": float(ref_real_prob.mean()),
        # balanced: 0.5 * (mean(1 - D(G(x_forget))) + mean(D(ref(x_retain)))); 0.5 = chance
        "discriminator_soft_accuracy": 0.5 * (score + float(ref_real_prob.mean())),
        "forget_eval_samples": int(f_sel.numel()),
        "retain_eval_samples": int(r_sel.numel()),
    }


def run(inputs: UnlearningInputs, config: AdversarialConfig) -> MethodResult:
    from worker.unlearning import _ops

    _ops.require(inputs.forget_images, inputs.forget_labels, "forget", "adversarial")
    _ops.require(inputs.retain_images, inputs.retain_labels, "retain", "adversarial")
    gen = _ops.seed_all(inputs.seed)
    model = inputs.model
    reference = _frozen_copy(model)
    disc = make_discriminator(inputs.num_classes, config.disc_hidden).to(inputs.device)
    nets = _Networks(model=model, reference=reference, disc=disc)

    total = config.epochs * _ops.steps_per_epoch(inputs.forget_images.shape[0], config.batch_size)
    eval_steps = 2
    progress = _ops.Progress(inputs.progress, total + eval_steps)
    progress.start("adversarial")
    with _ops.keep_mode(model):
        last = _train(inputs, config, nets, gen, progress, total)
        details = _evaluate(inputs, config, nets, gen, progress)
    del nets, reference
    progress.finish()
    return MethodResult(
        details={
            **details,
            "steps": total,
            **{k: _ops.finite_or_none(v) for k, v in last.items()},
        }
    )


register_runner(SPEC.name, run)
