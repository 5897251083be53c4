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

from typing import TYPE_CHECKING

from app.core.methods.adversarial import SPEC, AdversarialConfig
from worker.unlearning.base import MethodResult
from worker.unlearning.registry import register_runner

if TYPE_CHECKING:
    from torch import nn

    from worker.unlearning.base import UnlearningInputs


def make_discriminator(num_classes: int, hidden: int) -> nn.Module:
    from torch import nn

    return nn.Sequential(
        nn.Linear(num_classes, hidden),
        nn.LeakyReLU(0.2),
        nn.Linear(hidden, hidden),
        nn.LeakyReLU(0.2),
        nn.Linear(hidden, 1),
    )


def run(inputs: UnlearningInputs, config: AdversarialConfig) -> MethodResult:
    import copy

    import torch
    import torch.nn.functional as F

    from worker.unlearning import _ops

    _ops.require(inputs.forget_images, inputs.forget_labels, "forget", "adversarial")
    _ops.require(inputs.retain_images, inputs.retain_labels, "retain", "adversarial")
    gen = _ops.seed_all(inputs.seed)
    model, device = inputs.model, inputs.device
    nf, nr = inputs.forget_images.shape[0], inputs.retain_images.shape[0]

    reference = copy.deepcopy(model).eval()
    for p in reference.parameters():
        p.requires_grad_(False)
    disc = make_discriminator(inputs.num_classes, config.disc_hidden).to(device)

    per_epoch = _ops.steps_per_epoch(nf, config.batch_size)
    total = config.epochs * per_epoch
    eval_steps = 2
    progress = _ops.Progress(inputs.progress, total + eval_steps)
    progress.start("adversarial")
    betas = (config.beta1, config.beta2)
    opt_g = _ops.make_optimizer(
        "adam", model.parameters(), lr=config.lr, weight_decay=config.weight_decay, betas=betas
    )
    opt_d = _ops.make_optimizer(
        "adam", disc.parameters(), lr=config.disc_lr, weight_decay=config.weight_decay, betas=betas
    )
    sched_g = _ops.cosine_schedule(opt_g, total)
    sched_d = _ops.cosine_schedule(opt_d, total)
    retain_batches = _ops.cycle_indices(nr, config.batch_size, gen)

    last: dict[str, float] = {}
    with _ops.keep_mode(model):
        model.train()
        disc.train()
        for _ in range(config.epochs):
            for f_idx in _ops.batch_indices(nf, config.batch_size, gen):
                xf, _yf = _ops.load_batch(inputs.forget_images, inputs.forget_labels, f_idx, device)
                xr, yr = _ops.load_batch(
                    inputs.retain_images, inputs.retain_labels, next(retain_batches), device
                )
                with torch.no_grad():
                    real = F.softmax(reference(xr), dim=1)
                out = model(torch.cat([xf, xr]))  # one pass: BatchNorm sees both
                out_f, out_r = out[: xf.shape[0]], out[xf.shape[0] :]
                fake = F.softmax(out_f, dim=1)

                # discriminator: real (reference on retain) -> 1, fake (generator on forget) -> 0
                for _ in range(config.disc_steps):
                    d_real, d_fake = disc(real), disc(fake.detach())
                    loss_d = F.binary_cross_entropy_with_logits(
                        d_real, torch.ones_like(d_real)
                    ) + F.binary_cross_entropy_with_logits(d_fake, torch.zeros_like(d_fake))
                    opt_d.zero_grad(set_to_none=True)
                    loss_d.backward()
                    opt_d.step()

                # generator: non-saturating loss (make D call its forget outputs real) + retain CE
                d_gen = disc(fake)
                loss_adv = F.binary_cross_entropy_with_logits(d_gen, torch.ones_like(d_gen))
                loss_ret = F.cross_entropy(out_r, yr)
                loss_g = config.adversarial_weight * loss_adv + config.retain_weight * loss_ret
                opt_g.zero_grad(set_to_none=True)
                loss_g.backward()
                opt_g.step()
                sched_g.step()
                sched_d.step()
                last = {
                    "discriminator_loss": float(loss_d.detach()),
                    "generator_adversarial_loss": float(loss_adv.detach()),
                    "generator_retain_loss": float(loss_ret.detach()),
                }
                progress.advance("adversarial")

        # final measurements, eval mode
        model.eval()
        disc.eval()
        cap = config.eval_max_samples
        f_sel = torch.randperm(nf, generator=gen)[:cap]
        r_sel = torch.randperm(nr, generator=gen)[:cap]
        f_imgs, f_lbls = inputs.forget_images[f_sel], inputs.forget_labels[f_sel].long()
        r_imgs, r_lbls = inputs.retain_images[r_sel], inputs.retain_labels[r_sel].long()

        @torch.no_grad()
        def measure(net: nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            preds, probs = [], []
            for i in range(0, images.shape[0], 256):
                logits = net(_ops.to_input(images[i : i + 256].to(device)))
                preds.append(logits.argmax(1).cpu())
                probs.append(torch.sigmoid(disc(F.softmax(logits, dim=1))).squeeze(1).cpu())
            return torch.cat(preds), torch.cat(probs)

        f_pred, f_real_prob = measure(model, f_imgs)
        progress.advance("evaluate")
        r_pred, _ = measure(model, r_imgs)
        _, ref_real_prob = measure(reference, r_imgs)
        progress.advance("evaluate")
    del reference
    progress.finish()
    score = float((1.0 - f_real_prob).mean())
    return MethodResult(
        details={
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
            "steps": total,
            **{k: _ops.finite_or_none(v) for k, v in last.items()},
        }
    )


register_runner(SPEC.name, run)
