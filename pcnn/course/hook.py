"""CPEN455 course compatibility: the two functions the course's grading scripts call.

The course grades classification with ``get_label(model, model_input, device)``
(predicted labels for a batch from its dataloader: float ``(B, 3, 32, 32)`` in
[-1, 1]) and generation with ``my_sample(model, gen_data_dir, sample_batch_size,
obs, sample_op)`` (25 images per class written into ``gen_data_dir``, then FID
against the test images), with the weights at ``models/conditional_pixelcnn.pth``.
This module provides both with exactly those signatures for our
:class:`pcnn.PixelCNNpp`, plus the weight file:

* :func:`export_for_course` writes ``models/conditional_pixelcnn.pth``: a dict
  ``{"format", "config" (ModelConfig as a JSON string), "state_dict", "class_names"}``
  that loads with ``torch.load(path, weights_only=True)`` (tensors and strings
  only, no pickled code);
  The checkpoint's recommended guidance (:data:`pcnn.sampling.guidance.METADATA_KEY`) travels in it too;
* :func:`load_course_model` rebuilds the model from that file (with that recommendation, so
  ``my_sample(..., guidance="recommended")`` works in the course's scripts); the model it returns also
  accepts that file's dict in ``load_state_dict``, as the course's classification script,
  after the student's block, loads ``torch.load('models/conditional_pixelcnn.pth')`` into it;
* CLI: ``python -m pcnn course export --checkpoint C --out models/conditional_pixelcnn.pth``.

Pasting into the course's scripts
---------------------------------
Install pcnn in the course environment, export the weights once::

    python -m pcnn course export --checkpoint checkpoints/<name>.safetensors \\
        --out models/conditional_pixelcnn.pth

then, in the classification script (where the model is built and loaded) and in
the generation script, use our model and functions::

    from pcnn.course import load_course_model, get_label, my_sample
    model = load_course_model("models/conditional_pixelcnn.pth", device=device)

(``get_label`` and ``my_sample`` are then the course's two functions, unchanged
signatures.) If the line that builds the course's own ``PixelCNN`` cannot be
changed, leave it: both functions accept any ``model`` and, when it is not a
:class:`pcnn.PixelCNNpp`, load ours from ``models/conditional_pixelcnn.pth``
(:data:`DEFAULT_PATH`) once and use that instead.

``obs`` (the image shape ``(3, 32, 32)``) is checked against the model's size;
``sample_op`` (the course's pixel-sampling function for its own output layout)
is ignored: our sampler draws from our logistic mixture itself
(:func:`pcnn.sampling.sample.sample`, cached and reproducible).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from pcnn.model.config import CPEN455_CLASSES, ModelConfig
from pcnn.sampling.guidance import DEFAULT_GUIDE, METADATA_KEY
from pcnn.model.checkpoint import atomic_write, load
from pcnn.model.classify import log_likelihoods
from pcnn.model.likelihood import quantize
from pcnn.sampling.sets import write_sample_set
from pcnn.model.network import PixelCNNpp

#: Where the course's scripts expect the weights.
DEFAULT_PATH = "models/conditional_pixelcnn.pth"
FORMAT = "pcnn-course-v1"
#: Images per class the course's generation evaluation expects.
PER_CLASS = 25

_cache: dict = {}


def export_for_course(checkpoint, out=DEFAULT_PATH) -> Path:
    """Write the model of ``checkpoint`` (a ``.safetensors`` path or a :class:`PixelCNNpp`) to ``out``
    as a plain ``torch.save`` dict loadable with ``weights_only=True``; returns ``out``."""
    model = checkpoint if isinstance(checkpoint, PixelCNNpp) else load(checkpoint)
    state = {k: v.detach().contiguous().cpu().clone() for k, v in model.state_dict().items()}
    payload = {"format": FORMAT, "config": model.config.to_json(), "state_dict": state,
               "class_names": json.dumps(list(CPEN455_CLASSES[:model.config.num_classes]))}
    rec = (getattr(model, "checkpoint_metadata", None) or {}).get(METADATA_KEY)
    if rec is not None:
        payload[METADATA_KEY] = json.dumps(rec)
    out = Path(out)
    atomic_write(out, lambda tmp: torch.save(payload, tmp))
    return out


def load_course_model(path=DEFAULT_PATH, device="cpu") -> PixelCNNpp:
    """Rebuild our model from a file written by :func:`export_for_course`, in eval mode."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: write it with `python -m pcnn course export "
                                f"--checkpoint C --out {path}`")
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path} is not a pcnn course export (format {FORMAT!r}); the course's own "
                         "PixelCNN weights cannot be loaded into pcnn's model")
    model = PixelCNNpp(ModelConfig.from_dict(json.loads(payload["config"])))
    model.load_state_dict(payload["state_dict"])
    if METADATA_KEY in payload:   # the recommendation, for guidance="recommended"
        model.checkpoint_metadata = {METADATA_KEY: json.loads(payload[METADATA_KEY])}
    # The course's classification script, after the student's block, runs
    # ``model.load_state_dict(torch.load('models/conditional_pixelcnn.pth'))``, a line the
    # student may not change. That file is our payload (config beside the weights), not
    # a bare state dict, so this model unwraps it first.
    _register_pre_hook(model, _unwrap_course_payload)
    return model.to(device).eval()


def _register_pre_hook(model: torch.nn.Module, hook) -> None:
    # Public from torch 2.5; requirements allow torch>=2.3, which has only the private name.
    register = getattr(model, "register_load_state_dict_pre_hook", None)
    if register is not None:
        register(hook)
    else:  # pragma: no cover - torch < 2.5
        model._register_load_state_dict_pre_hook(lambda sd, prefix, *a: hook(model, sd, prefix, *a))


def _unwrap_course_payload(module, state_dict, prefix, *args) -> None:
    """Load-state-dict pre-hook: replace a course payload by the state dict inside it (in place)."""
    if prefix or state_dict.get("format") != FORMAT:
        return  # a plain state dict (or a submodule's share of one): load as usual
    inner = state_dict["state_dict"]
    config = ModelConfig.from_dict(json.loads(state_dict["config"]))
    if config != module.config:
        raise ValueError(f"the course export holds a different model ({config}) from this one "
                         f"({module.config}); rebuild it with load_course_model(path)")
    state_dict.clear()
    state_dict.update(inner)


def _ours(model, device=None) -> PixelCNNpp:
    """``model`` if it is ours, else our model from :data:`DEFAULT_PATH` (loaded once)."""
    if isinstance(model, PixelCNNpp):
        return model
    key = (str(Path(DEFAULT_PATH).resolve()), str(device))
    if key not in _cache:
        _cache[key] = load_course_model(DEFAULT_PATH, device=device or "cpu")
    return _cache[key]


@torch.no_grad()
def get_label(model, model_input, device):
    """Predicted labels ``(B,)`` (int64, on ``device``) = argmax_c log p(x | c) for the course's batch.

    ``model_input``: float ``(B, 3, S, S)`` in [-1, 1] (the course's ``(x - 0.5) * 2`` of
    ``ToTensor`` values, i.e. the 8-bit grid); values are clamped and snapped to
    the grid so that float round-off cannot move a pixel out of its bin.
    """
    ours = _ours(model, device)
    dev = next(ours.parameters()).device
    x = quantize(torch.as_tensor(model_input, dtype=torch.float32).to(dev))
    ll = log_likelihoods(ours, x)
    return ll.argmax(1).to(device if device is not None else dev)


def my_sample(model, gen_data_dir, sample_batch_size=100, obs=(3, 32, 32), sample_op=None, guidance=0.0,
              guide=DEFAULT_GUIDE, plausible=0.0, schedule="constant"):
    """Write :data:`PER_CLASS` (25) images per class into ``gen_data_dir`` as ``Class<c>_image_<nn>.png``.

    ``sample_batch_size`` bounds the images sampled at once; ``obs`` must match the
    model's ``(3, S, S)``; ``sample_op`` is ignored (see the module docstring).
    Reproducible (seed 0). Returns the list of written paths (``grid.png`` excluded).
    ``guidance``, ``guide``, ``plausible``, ``schedule``: class guidance (:func:`pcnn.sampling.sample.sample`;
    default off), e.g. ``my_sample(model=model, gen_data_dir=gen_data_dir, guidance="recommended")``
    (the checkpoint's recommended setting) or ``guidance=4.0, plausible=0.1`` in the course's block.
    """
    ours = _ours(model)
    s = ours.config.image_size
    if obs is not None and tuple(obs) != (3, s, s):
        raise ValueError(f"obs {tuple(obs)} does not match the model's image shape (3, {s}, {s})")
    return write_sample_set(ours, gen_data_dir, per_class=PER_CLASS, seed=0,
                            batch_size=max(1, int(sample_batch_size or 100)), show_progress=False,
                            guidance=guidance, guide=guide, plausible=plausible, schedule=schedule)
