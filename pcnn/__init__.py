"""pcnn: class-conditional PixelCNN++ that generates and classifies by likelihood.

Salimans et al. 2017 (PixelCNN++), conditioned as in van den Oord et al. 2016
(conditional PixelCNN). ``predict(x) = argmax_c log p(x | c)``.
"""
from .checkpoint import CheckpointError, load, read_metadata, save
from .classify import log_likelihoods, metrics, posterior, predict
from .config import FUSION_MODES, ModelConfig
from .model import PixelCNNpp
from .sample import sample

__version__ = "0.1.0"
__all__ = ["ModelConfig", "FUSION_MODES", "PixelCNNpp", "save", "load", "read_metadata", "CheckpointError",
           "log_likelihoods", "predict", "posterior", "metrics", "sample"]
