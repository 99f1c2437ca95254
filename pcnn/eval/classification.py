"""Classification by likelihood, scored: what ``predict(x) = argmax_c log p(x | c)`` gets right.

* :func:`score` -- accuracy, macro F1, per-class accuracy, confusion matrix and bits/dim of a
  split from its per-class log-likelihoods (:func:`pcnn.model.classify.log_likelihoods`).
* :func:`calibration` -- reliability of ``p(c | x)`` by Bayes' rule: expected calibration error
  and the bins behind the reliability plot (:func:`pcnn.viz.classification.reliability_plot`).
* :func:`metrics` -- accuracy, macro F1 and confusion from labels alone.
* :func:`write_predictions` -- the predictions CSV (ours, or the course's layout).
* Analyses notebook 03 shows: :func:`likelihood_margins`, :func:`confident_mistakes`,
  :func:`mistake_titles`, :func:`confidence_summary`, :func:`margin_by_row`.
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Optional, Sequence
import numpy as np
import torch
from pcnn.model.likelihood import bits_per_dim, class_nll
from pcnn.model.classify import posterior
from pcnn.model.config import class_names_for


def score(log_liks: torch.Tensor, labels: torch.Tensor, cfg) -> dict:
    """Metrics of likelihood classification from log p(x|c) (N, C) and true labels (N,).

    :func:`metrics` of the argmax (None entries for an unconditional model) plus
    ``bpd``: bits/dim under the true class (the only column when unconditional),
    ``correct``: the count of right predictions and ``class_nll``: the mean
    ``-log p(y | x)`` in nats under a uniform prior (:func:`pcnn.model.likelihood.class_nll`,
    the discriminative term of training; None when unconditional).
    """
    dims = 3 * cfg.image_size ** 2
    if not cfg.conditional:
        return {"accuracy": None, "macro_f1": None, "correct": None, "class_nll": None,
                "bpd": float(bits_per_dim(-log_liks[:, 0].double().mean(), dims))}
    pred = log_liks.argmax(1)
    out = metrics(labels.numpy(), pred.numpy(), cfg.num_classes)
    true_ll = log_liks.gather(1, labels[:, None]).squeeze(1)
    out["bpd"] = float(bits_per_dim(-true_ll.double().mean(), dims))
    out["correct"] = int((pred == labels).sum())
    out["class_nll"] = float(class_nll(log_liks.double(), labels.to(log_liks.device)).mean())
    return out


def calibration(log_liks: torch.Tensor, labels: torch.Tensor, bins: int = 10, prior=None) -> dict:
    """How well the posterior's confidence matches accuracy: log p(x|c) (N, C), labels (N,) ->
    ``{"ece", "bins"}``. The confidence of an image is max_c p(c|x) (:func:`posterior`, uniform
    prior unless ``prior``); images are binned by confidence into ``bins`` equal-width bins on
    [1/C, 1]; ``ece`` (expected calibration error) = sum over bins of (count / N) *
    |accuracy - mean confidence|. Each bin: ``lo``, ``hi``, ``count``, ``confidence``,
    ``accuracy`` (None for an empty bin)."""
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    post = posterior(log_liks, prior)
    conf, pred = post.max(1)
    correct = (pred == labels.to(pred.device)).double()
    c = log_liks.shape[1]
    edges = torch.linspace(1.0 / c, 1.0, bins + 1, dtype=torch.float64)
    idx = torch.bucketize(conf, edges[1:-1], right=True)  # bin k holds conf in [edges[k], edges[k+1])
    out, ece = [], 0.0
    for k in range(bins):
        m = idx == k
        n = int(m.sum())
        if n:
            acc, mean_conf = float(correct[m].mean()), float(conf[m].mean())
            ece += n / len(conf) * abs(acc - mean_conf)
        out.append({"lo": float(edges[k]), "hi": float(edges[k + 1]), "count": n,
                    "confidence": mean_conf if n else None, "accuracy": acc if n else None})
    return {"ece": ece, "bins": out, "n": len(conf)}


def metrics(y_true, y_pred, num_classes: int) -> dict:
    """Accuracy, macro F1, per-class accuracy (recall) and confusion matrix (rows: true)."""
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.shape != y_pred.shape or y_true.size == 0:
        raise ValueError(f"need equally long, non-empty label arrays, got {y_true.shape} and {y_pred.shape}")
    labels = list(range(num_classes))
    cm = confusion_matrix(y_true, y_pred, labels=labels)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_class = np.where(cm.sum(1) > 0, np.diag(cm) / cm.sum(1), np.nan)
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        "per_class_accuracy": [float(a) for a in per_class],
        "confusion_matrix": cm.tolist(),
        "n": int(y_true.size),
    }


def write_predictions(path, ids: Sequence[str], labels, log_liks: Optional[torch.Tensor] = None,
                      course_format: bool = False, class_names: Optional[Sequence[str]] = None) -> Path:
    """Write predictions as CSV and return the path.

    Default: a header ``id,label[,loglik_0,...]`` then one row per image (``log_liks``
    (N, C) adds the per-class log p(x|c) in nats; ``class_names`` names those columns
    ``loglik_<name>``). ``course_format=True``: the layout of the
    course's own CSVs, no header, rows ``test/0000001.jpg,2`` (the split's CSV with the
    labels filled in), for submissions.
    """
    labels = [int(v) for v in (labels.tolist() if torch.is_tensor(labels) else labels)]
    if len(ids) != len(labels) or (log_liks is not None and len(log_liks) != len(labels)):
        raise ValueError(f"{len(ids)} ids, {len(labels)} labels"
                         + ("" if log_liks is None else f" and {len(log_liks)} log-likelihood rows") + " differ")
    if course_format and log_liks is not None:
        raise ValueError("the course format has no log-likelihood columns")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        if not course_format:
            cols = [] if log_liks is None else [f"loglik_{class_names[c] if class_names else c}"
                                                for c in range(log_liks.shape[1])]
            w.writerow(["id", "label", *cols])
        rows = log_liks.tolist() if log_liks is not None else [[] for _ in labels]
        for i, lab, ll in zip(ids, labels, rows):
            w.writerow([i, lab, *[f"{v:.6f}" for v in ll]])
    return path


def likelihood_margins(ll: torch.Tensor, num_dims: int) -> dict:
    """For log-likelihoods ``ll`` (N, C) in nats: the prediction (argmax), the runner-up
    class and the margin between them in nats and in bits/dim (``num_dims`` = 3*H*W);
    the margin stays informative where the posterior p(c | x) saturates at 1.00."""
    top = ll.topk(2, dim=1)
    nats = top.values[:, 0] - top.values[:, 1]
    return {"pred": top.indices[:, 0], "second": top.indices[:, 1], "nats": nats,
            "bpd": bits_per_dim(nats, num_dims)}


def confident_mistakes(ll: torch.Tensor, labels: torch.Tensor, n: int) -> tuple:
    """The ``n`` wrong predictions with the largest margin of the prediction over the true
    class, ``log p(x | pred) - log p(x | true)`` in nats: ``(indices, margins)``, largest first."""
    pred = ll.argmax(1)
    wrong = (pred != labels).nonzero().flatten()
    margin = ll[wrong, pred[wrong]] - ll[wrong, labels[wrong]]
    order = margin.argsort(descending=True)[:n]
    return wrong[order], margin[order]


def mistake_titles(ll: torch.Tensor, labels: torch.Tensor, indices: Sequence[int], num_dims: int,
                   class_names: Optional[Sequence[str]] = None) -> list:
    """Two-line titles for mistakes: ``true <c> -> <pred>`` and the margin of the prediction
    over the true class in nats and bits/dim."""
    names = class_names_for(ll.shape[1], class_names)
    out = []
    for i in [int(j) for j in indices]:
        p, t = int(ll[i].argmax()), int(labels[i])
        nats = float(ll[i, p] - ll[i, t])
        out.append(f"true {names[t]} -> {names[p]}\nby {nats:.1f} nats = "
                   f"{float(bits_per_dim(torch.tensor(nats), num_dims)):.4f} bpd")
    return out


def confidence_summary(ll: torch.Tensor, labels: torch.Tensor, threshold: float = 0.995) -> dict:
    """How confident p(c | x) (uniform prior) is against how often it is right: ``accuracy``,
    ``share_confident`` (images whose top posterior is >= ``threshold``), ``accuracy_confident``
    (accuracy among them) and ``mean_confidence``; a calibrated classifier has mean confidence
    near its accuracy."""
    post = torch.softmax(ll.double(), dim=1)
    conf, pred = post.max(1)
    right = (pred == labels).double()
    sure = conf >= threshold
    return {"n": len(labels), "accuracy": float(right.mean()), "threshold": threshold,
            "share_confident": float(sure.double().mean()),
            "accuracy_confident": float(right[sure].mean()) if sure.any() else None,
            "mean_confidence": float(conf.mean())}


def margin_by_row(margin_map: torch.Tensor) -> dict:
    """A per-pixel margin map (H, W) in nats (e.g. :func:`pcnn.evidence_margin`) summed per image
    row: ``rows`` (H,), ``total``, ``top_row`` (the row adding the most) and ``top_share`` (its
    sum over the total: above 1 when the other rows pull the other way)."""
    rows = margin_map.double().sum(1)
    total = float(rows.sum())
    top = int(rows.argmax())
    return {"rows": rows, "total": total, "top_row": top, "top_nats": float(rows[top]),
            "top_share": float(rows[top]) / total if total else float("nan")}
