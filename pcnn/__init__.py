"""pcnn: class-conditional PixelCNN++ that generates and classifies by likelihood.

Salimans et al. 2017 (PixelCNN++), conditioned as in van den Oord et al. 2016
(conditional PixelCNN). ``predict(x) = argmax_c log p(x | c)``.
"""
from pcnn.model.checkpoint import CheckpointError, load, read_metadata, save
from pcnn.model.classify import log_likelihoods, posterior, predict
from pcnn.eval.classification import metrics
from pcnn.model.config import FUSION_MODES, ModelConfig
from pcnn.model.network import PixelCNNpp
from pcnn.model.evidence import evidence, evidence_margin
from pcnn.viz.classification import plot_evidence_margin
from pcnn.viz.grids import class_grid, completion_grid, labeled_grid
from pcnn.sampling.sample import complete, complete_as_every_class, sample
from pcnn.viz.samples import guidance_grid, same_noise_grid

__version__ = "0.1.0"
__all__ = ["ModelConfig", "FUSION_MODES", "PixelCNNpp", "save", "load", "read_metadata", "CheckpointError",
           "log_likelihoods", "predict", "posterior", "metrics", "sample",
           "complete", "complete_as_every_class", "evidence", "evidence_margin", "plot_evidence_margin",
           "labeled_grid", "class_grid", "same_noise_grid", "guidance_grid", "completion_grid", "evaluate_generation"]


def evaluate_generation(*args, **kwargs):
    """:func:`pcnn.eval.generation.evaluate_generation` (imported on first use: it pulls in torchmetrics)."""
    from pcnn.eval.generation import evaluate_generation as run  # imported late: optional torchmetrics is heavy
    return run(*args, **kwargs)
