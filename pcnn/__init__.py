"""pcnn: class-conditional PixelCNN++ that generates and classifies by likelihood.

Salimans et al. 2017 (PixelCNN++), conditioned as in van den Oord et al. 2016
(conditional PixelCNN). ``predict(x) = argmax_c log p(x | c)``.
"""
from .checkpoint import CheckpointError, load, read_metadata, save
from .classify import log_likelihoods, metrics, posterior, predict
from .config import FUSION_MODES, ModelConfig
from .model import PixelCNNpp
from .evidence import evidence, evidence_margin, plot_evidence_margin
from .grids import class_grid, completion_grid, labeled_grid
from .sample import complete, complete_as_every_class, guidance_grid, sample, same_noise_grid

__version__ = "0.1.0"
__all__ = ["ModelConfig", "FUSION_MODES", "PixelCNNpp", "save", "load", "read_metadata", "CheckpointError",
           "log_likelihoods", "predict", "posterior", "metrics", "sample",
           "complete", "complete_as_every_class", "evidence", "evidence_margin", "plot_evidence_margin",
           "labeled_grid", "class_grid", "same_noise_grid", "guidance_grid", "completion_grid", "evaluate_generation"]


def evaluate_generation(*args, **kwargs):
    """:func:`pcnn.generation.evaluate_generation` (imported on first use: it pulls in torchmetrics)."""
    from .generation import evaluate_generation as run  # imported late: optional torchmetrics is heavy
    return run(*args, **kwargs)
