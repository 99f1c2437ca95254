"""What training optimises and how it is scored: the per-batch loss (bits/dim of the
image under its true class, maximum likelihood as in PixelCNN++, Salimans et al. 2017,
plus an optional discriminative term ``disc_weight * -log p(y|x)``, our departure from
the paper) and the validation figures. The likelihood itself is :mod:`pcnn.model.likelihood`.
"""
from __future__ import annotations

import torch

from pcnn.model.classify import log_likelihoods
from pcnn.eval.classification import score
from pcnn.model.config import ModelConfig
from pcnn.model.likelihood import bits_per_dim, class_nll, nll
from pcnn.model.network import PixelCNNpp


def training_loss(net, x: torch.Tensor, y: torch.Tensor, mc: ModelConfig, disc_weight: float = 0.0) -> tuple:
    """``(loss, bpd)`` of one batch: x (B,3,H,W) in [-1,1], y (B,) int64 -> two scalars.

    ``bpd``: mean bits/dim of x under its true class (the generative term, what
    the logs report). ``loss`` = ``bpd`` + ``disc_weight`` * mean ``-log p(y|x)``
    (nats, :func:`pcnn.model.likelihood.class_nll`). With ``disc_weight`` > 0 the
    batch goes through ``net`` once per class (one forward of C*B images,
    class-major) and the true-class rows give the generative term. The network
    may run under autocast; the likelihood is computed in float32.
    """
    if disc_weight > 0:
        b, nc = x.shape[0], mc.num_classes
        x_in = x.repeat(nc, 1, 1, 1)
        y_in = torch.arange(nc, device=x.device).repeat_interleave(b)
    else:
        x_in, y_in = x, (y if mc.conditional else None)
    out = net(x_in, y_in, check=False)
    with torch.autocast(x.device.type, enabled=False):
        nats = nll(x_in, out.float(), mc.nr_logistic_mix, reduction="none")
        dims = 3 * mc.image_size ** 2
        if disc_weight <= 0:
            bpd = bits_per_dim(nats, dims).mean()
            return bpd, bpd
        log_px = -nats.view(nc, b).t()                                       # (B, C): log p(x | c)
        bpd = bits_per_dim(-log_px.gather(1, y[:, None]).squeeze(1), dims).mean()
        return bpd + disc_weight * class_nll(log_px, y).mean(), bpd


def evaluate(model: PixelCNNpp, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 256) -> dict:
    """Validation bits/dim (under the true label), likelihood-classification accuracy / macro F1
    and ``ce``, the mean ``-log p(y | x)`` in nats (the discriminative term).

    ``images`` float in [-1, 1]; one batched pass scores every class.
    Unconditional models report bits/dim only (accuracy, F1 and ce are None).
    """
    m = score(log_likelihoods(model, images, batch_size=batch_size or None), labels, model.config)
    return {"bpd": m["bpd"], "acc": m["accuracy"], "f1": m["macro_f1"], "ce": m["class_nll"]}


def validation_objective(figures: dict, disc_weight: float) -> float:
    """The run's own objective on held-out images, from :func:`evaluate`'s ``figures``:
    ``bpd + disc_weight * ce``, the validation value of exactly what :func:`training_loss`
    minimises (bits/dim plus ``disc_weight`` times the mean ``-log p(y | x)`` in nats).
    With ``disc_weight == 0`` it is the bits/dim itself. The trainer picks EMA or raw
    weights and ``best.safetensors`` by it (ship rule v2, checkpoints/README.md).
    """
    if disc_weight > 0:
        if figures.get("ce") is None:
            raise ValueError("disc_weight > 0 needs the cross-entropy of a class-conditional model")
        return float(figures["bpd"]) + disc_weight * float(figures["ce"])
    return float(figures["bpd"])


def grad_norm(params) -> torch.Tensor:
    """Global L2 norm of the gradients (what clip_grad_norm_ returns, without clipping)."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(())
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.float()) for g in grads]))
