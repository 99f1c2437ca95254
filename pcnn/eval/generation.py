"""Generation metrics that rank models correctly, each beside what real images get.

For a folder of generated images (course names ``Class<c>_image_<nn>.png``)
against a reference folder (normally the test split), :func:`evaluate_generation`
reports

* **the course figure**: FID at dims 192 on the images given (normally 100),
  through :func:`pcnn.eval.fid.fid_from_dirs` (pytorch-fid, offline weights, cached
  reference statistics) exactly as ``python -m pcnn fid`` computes it;
* **FID-2048** on at least :data:`MIN_FID2048_IMAGES` images: the value of pytorch-fid's
  ``calculate_frechet_distance`` on the mean and covariance of the 2048-d pool
  features (formed as pytorch-fid's ``calculate_activation_statistics`` does),
  computed exactly from the features without the matrix square root (:func:`frechet_2048`);
* **KID** (mean and standard deviation over subsets): torchmetrics'
  ``KernelInceptionDistance`` with :class:`InceptionFeatures` (our offline
  pytorch-fid Inception) as its ``feature`` extractor; the subset size is the
  smallest set's count, capped at 1000;
* **Inception-probe accuracy**: a scikit-learn logistic regression on the 2048-d
  features of the training split (resized to the generated images' size, the
  course resize), its accuracy on the real validation split, and on the
  generated images per intended class (read from the file names);
* **what a person sees** (:mod:`pcnn.eval.quality`): improved precision / recall and
  density / coverage of the 2048-d features against the reference (Kynkäänniemi
  et al. 2019; Naeem et al. 2020, k = 5), and the speckle and clipped-colour rates
  of the pixels.

``real_floor=True`` writes the same number of real validation images per class,
resized to the generated images' size, as PNG files named like samples, and
reports every metric for them too: the figure real images get under the same
protocol.

Features are cached by content: :class:`InceptionFeatures` never recomputes
an image it has seen in the run (the floor's images are validation images), and
every image set's features are stored under ``cache_dir/inception_features``
(default ``$PCNN_CACHE_DIR`` or ``~/.cache/pcnn``) keyed by a hash of the uint8
pixels, their shape and the weights, so the training split is featurised once.
The Inception network is slow on a CPU (a few images per second on 2 cores).
"""
from __future__ import annotations

import contextlib
import logging
import hashlib
import math
import os
import warnings
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from pcnn.model.config import CPEN455_CLASSES, class_names_for
from pcnn.data.dataset import load_split
from .quality import pixel_metrics, prdc_or_none
from pcnn.sampling.sets import class_of_file, load_images, write_images
from pcnn.text import MISSING, cell, pipe_table
from . import fid as fidlib


MIN_FID2048_IMAGES = 500       # below this FID-2048 is refused unless min_images is lowered


log = logging.getLogger(__name__)

MIN_KID_IMAGES = 2             # torchmetrics' unbiased MMD needs 2 per subset


KID_SUBSETS = 100


KID_MAX_SUBSET = 1000


FEATURE_DIMS = 2048


class GenerationError(ValueError):
    """A user-facing problem with a generation evaluation (too few images, bad folder, ...)."""


def _digest(img: torch.Tensor) -> bytes:
    return hashlib.sha1(img.contiguous().numpy().tobytes() + str(tuple(img.shape)).encode()).digest()


class InceptionFeatures(torch.nn.Module):
    """uint8 images (B, 3, H, W) -> (B, 2048) pool features of pytorch-fid's InceptionV3.

    The network is :meth:`pcnn.eval.fid.FIDModel.network` at dims 2048 (it resizes to
    299 and normalises itself), fed ``images / 255`` as pytorch-fid feeds files.
    This is the ``feature`` extractor handed to torchmetrics'
    ``KernelInceptionDistance``. Each image's features are remembered by a
    hash of its pixels, so an image seen before in this object is not run again.
    """

    def __init__(self, fid_model: Optional["fidlib.FIDModel"] = None, device: str = "cpu", batch_size: int = 50,
                 cache_dir=None):
        super().__init__()
        self.fid_model = fid_model if fid_model is not None else fidlib.load_inception(device, cache_dir)
        self.fid_model.device = device
        self.device = device
        self.batch_size = int(batch_size)
        if self.batch_size < 1:
            raise GenerationError(f"batch size must be positive, got {batch_size}")
        self.cache_dir = cache_dir
        self.memo: Dict[bytes, torch.Tensor] = {}
        self.computed = 0   # images actually run through the network (for tests and logs)
        self._net = None

    @property
    def net(self):
        if self._net is None:
            self._net = self.fid_model.network(FEATURE_DIMS).to(self.device).eval()
        return self._net

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if not torch.is_tensor(images) or images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
            got = f"{getattr(images, 'dtype', type(images).__name__)} {tuple(getattr(images, 'shape', ()))}"
            raise GenerationError(f"InceptionFeatures takes uint8 images (B, 3, H, W), got {got}")
        images = images.cpu()
        keys = [_digest(im) for im in images]
        todo = [i for i, k in enumerate(keys) if k not in self.memo]
        for start in range(0, len(todo), self.batch_size):
            idx = todo[start:start + self.batch_size]
            x = images[idx].to(self.device, torch.float32) / 255.0
            feats = self.net(x)[0].flatten(1).float().cpu()
            self.computed += len(idx)
            for i, f in zip(idx, feats):
                self.memo[keys[i]] = f
        if not keys:
            return torch.zeros(0, FEATURE_DIMS)
        return torch.stack([self.memo[k] for k in keys])

    def set_features(self, images: torch.Tensor) -> np.ndarray:
        """Features of a whole image set (N, 2048), cached on disk by the pixels' content.

        Processes sharing the cache compute a set once: the first takes the set's lock file
        (:func:`_set_lock`) and computes, the others wait for it and read its result (two fusion
        runs finishing together once spent 20 CPU-minutes each on the same 3,899 training images)."""
        path = self.cache_path(images)
        feats = self._cached_set(path, images)
        if feats is not None:
            return feats
        with contextlib.suppress(OSError):   # a read-only cache: computed, not kept
            path.parent.mkdir(parents=True, exist_ok=True)
        with _set_lock(path):
            feats = self._cached_set(path, images)   # another process may have computed it meanwhile
            if feats is not None:
                return feats
            feats = self(images).numpy()
            with contextlib.suppress(OSError):
                tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npy")
                np.save(tmp, feats)
                os.replace(tmp, path)
        return feats

    def cache_path(self, images: torch.Tensor) -> Path:
        """Where :meth:`set_features` keeps this set's features: named by the Inception weights'
        source, the set's shape and its pixels (sha256)."""
        h = hashlib.sha256(f"pcnn-inception-features-v1|{self.fid_model.source}|{tuple(images.shape)}\n".encode())
        h.update(images.contiguous().numpy().tobytes())
        return fidlib.default_cache_dir(self.cache_dir) / "inception_features" / f"{h.hexdigest()[:32]}.npy"

    def _cached_set(self, path: Path, images: torch.Tensor) -> Optional[np.ndarray]:
        """The set's features from the disk cache (remembered per image too), or None."""
        if not path.is_file():
            return None
        with contextlib.suppress(Exception):
            feats = np.load(path)
            if feats.shape == (images.shape[0], FEATURE_DIMS):
                for im, f in zip(images, torch.from_numpy(feats)):
                    self.memo.setdefault(_digest(im), f)
                return feats
        return None


@contextlib.contextmanager
def _set_lock(path: Path):
    """An exclusive ``flock`` on ``<path>.lock`` for as long as the block runs; released by the
    kernel if the process dies. Where it cannot be taken (no ``fcntl``: Windows; a read-only
    cache) the block runs unlocked: at worst two processes compute the same set, as before.
    The caller has made ``path``'s folder."""
    try:
        import fcntl
        fh = open(path.with_suffix(".lock"), "a")
    except (ImportError, OSError):
        yield
        return
    try:
        with contextlib.suppress(OSError):
            fcntl.flock(fh, fcntl.LOCK_EX)
        yield
    finally:
        fh.close()   # closing the file releases the lock


def read_folder(folder) -> tuple:
    """uint8 images (N, 3, H, W) of an image folder (one size, FID's file rules), their files and
    classes (:func:`pcnn.sampling.sets.class_of_file`; None when the name gives none)."""
    files = fidlib.list_images(folder)
    fidlib._check_images(files)
    return load_images(files), files, [class_of_file(f.name) for f in files]


def write_real_floor(out_dir, counts: Dict[int, int], size: int, data_dir=None, seed: int = 0,
                     split: str = "validation") -> List[Path]:
    """Write ``counts[c]`` real ``split`` images of each class c, resized to ``size``, as a set.

    Files are named like samples (``Class<c>_image_<nn>.png``, :mod:`pcnn.sampling.sets`); the
    images are a seeded random choice per class. A class with fewer images than asked is an
    error that names both numbers. ``counts`` may use key -1 for "any class" (``Real_...``).
    """
    val = load_split(split, data_dir, size=size, show_progress=False)
    g = torch.Generator().manual_seed(seed)
    picks, labels = [], []
    for c, n in sorted(counts.items()):
        pool = torch.arange(len(val)) if c < 0 else (val.labels == c).nonzero().flatten()
        if n > len(pool):
            what = "images" if c < 0 else f"images of class {c}"
            raise GenerationError(f"the real floor needs {n} {what} but the {split} split has {len(pool)}; "
                                  f"ask for at most {len(pool)} (fewer samples, or floor_count)")
        picks.append(pool[torch.randperm(len(pool), generator=g)[:n]].sort().values)
        labels += [c] * n
    out_dir = Path(out_dir)
    if out_dir.exists():  # a floor folder holds nothing else: stale PNGs of any name go
        for old in out_dir.glob("*.png"):
            old.unlink()
    return write_images(val.images[torch.cat(picks)], labels, out_dir)


# ------------------------------------------------------------------------- metrics


def kid(real_images: torch.Tensor, fake_images: torch.Tensor, extractor: InceptionFeatures,
        subset_size: Optional[int] = None, subsets: int = KID_SUBSETS, seed: int = 0) -> tuple:
    """KID (mean, std over ``subsets`` subsets) by torchmetrics with ``extractor`` as its feature network.

    ``subset_size`` defaults to the smaller count, capped at 1000. Seeded: the
    subsets are drawn under ``torch.manual_seed(seed)`` (the global RNG is restored).
    """
    from torchmetrics.image.kid import KernelInceptionDistance
    n = min(len(real_images), len(fake_images))
    if n < MIN_KID_IMAGES:
        raise GenerationError(f"KID needs at least {MIN_KID_IMAGES} images in each set, got "
                              f"{len(real_images)} real and {len(fake_images)} generated")
    m = min(n, KID_MAX_SUBSET) if subset_size is None else int(subset_size)
    if not MIN_KID_IMAGES <= m <= n:
        raise GenerationError(f"KID subset size must be in [{MIN_KID_IMAGES}, {n}] for these sets, got {m}")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*will save all extracted features.*")
        metric = KernelInceptionDistance(feature=extractor, subsets=subsets, subset_size=m)
    for imgs, real in ((real_images, True), (fake_images, False)):
        for start in range(0, len(imgs), extractor.batch_size):
            metric.update(imgs[start:start + extractor.batch_size], real=real)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        mean, std = metric.compute()
    return float(mean), float(std), m


def frechet_2048(feats_a: np.ndarray, feats_b: np.ndarray) -> float:
    """The Fréchet distance between two (N, D) feature sets: the value pytorch-fid's
    ``calculate_frechet_distance`` gives on their means and (N - 1)-normalised covariances,
    computed exactly without the D x D matrix square root.

    ``tr sqrt(S_a S_b)`` is the sum of the singular values of ``A_c B_c^T / sqrt((n_a-1)(n_b-1))``
    (``A_c``, ``B_c`` the centred features): the nonzero eigenvalues of ``S_a S_b`` are the squared
    singular values of that n_a x n_b matrix (with many features, where that matrix would be large,
    the same trace comes from two symmetric D x D eigendecompositions). An SVD of 500 x 519 takes
    milliseconds where scipy's ``sqrtm`` of 2048 x 2048 took about 16 s per call at one thread on
    this project's CPUs, and it agrees with pytorch-fid to about 1e-7 relative (``tests/test_generation.py``). Raises
    ``ValueError`` for fewer than 2 features in a set or mismatched dimensions.
    """
    a = np.asarray(feats_a, dtype=np.float64)
    b = np.asarray(feats_b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"need two (N, D) feature sets of the same D, got {a.shape} and {b.shape}")
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"a covariance needs at least 2 features per set, got {len(a)} and {len(b)}")
    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    ac, bc = a - mu_a, b - mu_b
    na, nb = len(a) - 1, len(b) - 1
    dims = a.shape[1]
    if len(a) * len(b) * min(len(a), len(b)) <= 2 * dims ** 3:
        # few features (500 samples vs 519 test images): SVD of the small n_a x n_b cross-product
        cross = np.linalg.svd(ac @ bc.T, compute_uv=False).sum() / np.sqrt(na * nb)
    else:
        # many features (tens of thousands): the same trace from D x D matrices, never n_a x n_b;
        # eigvals(S_a S_b) = eigvals(R S_b R) with R = sqrt(S_a), symmetric, so two eigh calls
        w, v = np.linalg.eigh(ac.T @ ac / na)
        r = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
        cross = np.sqrt(np.clip(np.linalg.eigvalsh(r @ (bc.T @ bc / nb) @ r), 0, None)).sum()
    d = ((mu_a - mu_b) ** 2).sum() + (ac * ac).sum() / na + (bc * bc).sum() / nb - 2.0 * cross
    return float(max(d, 0.0))


def train_probe(features: np.ndarray, labels: np.ndarray, seed: int = 0):
    """A scikit-learn pipeline (standardise, logistic regression) fitted on (N, 2048) features."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    if len(set(np.asarray(labels).tolist())) < 2:
        raise GenerationError("the probe needs training images of at least 2 classes")
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=seed)).fit(features, labels)


def probe_scores(probe, features: np.ndarray, labels: Sequence[Optional[int]], num_classes: int,
                 class_names: Sequence[str] = CPEN455_CLASSES) -> Optional[dict]:
    """Accuracy overall and per intended class; None when no image carries a class."""
    keep = [i for i, c in enumerate(labels) if c is not None]
    if not keep:
        return None
    y = np.asarray([labels[i] for i in keep])
    pred = probe.predict(features[keep])
    names = class_names_for(num_classes, class_names)
    per = {names[c]: float(np.mean(pred[y == c] == c)) for c in sorted(set(y.tolist()))}
    return {"accuracy": float(np.mean(pred == y)), "per_class": per, "n": len(keep)}


def _select_per_class(labels: torch.Tensor, per_class: Optional[int], seed: int) -> torch.Tensor:
    if per_class is None:
        return torch.arange(len(labels))
    g = torch.Generator().manual_seed(seed)
    out = []
    for c in sorted(set(labels.tolist())):
        pool = (labels == c).nonzero().flatten()
        out.append(pool[torch.randperm(len(pool), generator=g)[:per_class]])
    return torch.cat(out).sort().values


def evaluate_generation(gen_dirs, ref_dir, data_dir=None, real_floor: bool = False, floor_dir=None,
                        floor_count: Optional[int] = None, min_images: int = MIN_FID2048_IMAGES,
                        probe: bool = True, probe_train_per_class: Optional[int] = None,
                        kid_subsets: int = KID_SUBSETS, kid_subset_size: Optional[int] = None,
                        batch_size: int = 50, device: str = "cpu", cache_dir=None, seed: int = 0,
                        extractor: Optional[InceptionFeatures] = None) -> dict:
    """Every generation metric for each folder of ``gen_dirs`` (and the real floor) against ``ref_dir``.

    Returns a JSON-ready dict: ``sets`` maps each evaluated folder (the floor as
    ``"real floor"``) to ``{"n", "fid_192", "fid_2048", "kid_mean", "kid_std",
    "probe", "precision", "recall", "density", "coverage", "speckle", "clipped"}``
    (:mod:`pcnn.eval.quality`); plus the reference and probe details, the KID subset size, the
    weights and warnings. ``min_images``: the fewest images FID-2048 accepts
    (default 500; lower it knowingly, the estimate is then rank-deficient).
    ``floor_count``: total real images for the floor (default: as many per class
    as the first generated folder has). ``probe_train_per_class``: train the
    probe on this many training images per class (default the whole split).
    """
    say = log.info
    gen_dirs = [gen_dirs] if isinstance(gen_dirs, (str, Path)) else list(gen_dirs)
    if not gen_dirs:
        raise GenerationError("no generated folder given")
    if min_images < 2:
        raise GenerationError(f"min_images must be >= 2 (a covariance), got {min_images}")
    sets = {}
    for d in gen_dirs:
        imgs, files, classes = read_folder(d)
        sets[str(d)] = (imgs, classes)
    first_imgs, first_classes = next(iter(sets.values()))
    size = first_imgs.shape[-1]
    for d, (imgs, _) in sets.items():
        if len(imgs) < min_images:
            raise GenerationError(f"FID-2048 needs at least {min_images} generated images, {d} has {len(imgs)}; "
                                  f"generate more (e.g. --per-class {math.ceil(min_images / 4)}) or lower "
                                  "min_images (--min-images) to accept a rank-deficient estimate")
    warn: List[str] = []
    if real_floor:
        if floor_dir is None:
            raise GenerationError("real_floor needs floor_dir, the folder to write the real images into")
        if floor_count is not None:
            counts = {-1: int(floor_count)}
        elif all(c is not None for c in first_classes):
            counts = {c: first_classes.count(c) for c in sorted(set(first_classes))}
        else:
            counts = {-1: len(first_classes)}
        total = sum(counts.values())
        if total < min_images:
            raise GenerationError(f"FID-2048 needs at least {min_images} images; the real floor asks for {total}")
        say(f"writing the real floor: {total} validation images at {size}x{size} into {floor_dir}")
        write_real_floor(floor_dir, counts, size, data_dir, seed)
        imgs, _, classes = read_folder(floor_dir)
        sets["real floor"] = (imgs, classes)

    ref_imgs, _, _ = read_folder(ref_dir)
    ex = extractor if extractor is not None else InceptionFeatures(None, device, batch_size, cache_dir)
    say(f"reference features: {len(ref_imgs)} images of {ref_dir}")
    ref_feats = ex.set_features(ref_imgs)
    m = kid_subset_size
    if m is None:
        m = min([len(ref_imgs), KID_MAX_SUBSET] + [len(v[0]) for v in sets.values()])

    probe_model, probe_info = None, None
    if probe:
        train = load_split("train", data_dir, size=size, show_progress=False)
        idx = _select_per_class(train.labels, probe_train_per_class, seed)
        say(f"probe: features of {len(idx)} training images at {size}x{size}")
        tr_feats = ex.set_features(train.images[idx].contiguous())
        probe_model = train_probe(tr_feats, train.labels[idx].numpy(), seed)
        val = load_split("validation", data_dir, size=size, show_progress=False)
        say(f"probe: features of {len(val)} validation images")
        val_feats = ex.set_features(val.images)
        nc = int(train.labels.max()) + 1
        probe_info = {"train_images": int(len(idx)), "train_per_class": probe_train_per_class,
                      "validation": probe_scores(probe_model, val_feats, val.labels.tolist(), nc),
                      "model": "StandardScaler + LogisticRegression (scikit-learn)"}

    out = {"ref": {"dir": str(ref_dir), "n": int(len(ref_imgs))}, "weights": ex.fid_model.weights,
           "kid": {"subsets": kid_subsets, "subset_size": int(m), "library": "torchmetrics KernelInceptionDistance"},
           "probe": probe_info, "min_images_fid_2048": int(min_images), "sets": {}, "warnings": warn}
    for name, (imgs, classes) in sets.items():
        folder = floor_dir if name == "real floor" else name
        say(f"{name}: {len(imgs)} images")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", fidlib.FIDRankWarning)
            course = fidlib.fid_from_dirs(folder, ref_dir, dims=[192], batch_size=batch_size, device=device,
                                          cache_dir=cache_dir, model=ex.fid_model)
        warn.extend(str(w.message) for w in caught if issubclass(w.category, fidlib.FIDRankWarning))
        feats = ex.set_features(imgs)
        k_mean, k_std, _ = kid(ref_imgs, imgs, ex, subset_size=m, subsets=kid_subsets, seed=seed)
        entry = {"dir": str(folder), "n": int(len(imgs)), "fid_192": course["fid"][192],
                 "fid_2048": frechet_2048(feats, ref_feats), "kid_mean": k_mean, "kid_std": k_std,
                 **prdc_or_none(ref_feats, feats), **pixel_metrics(imgs)}
        if probe_model is not None:
            entry["probe"] = probe_scores(probe_model, feats, classes, int(probe_model.classes_.max()) + 1)
        out["sets"][name] = entry
    out["images_featurised"] = ex.computed
    return out


def format_table(res: dict) -> str:
    """The results as a Markdown table, one row per set (the floor last)."""
    names = None
    rows = []
    for name, e in res["sets"].items():
        p = e.get("probe") or {}
        per = p.get("per_class") or {}
        names = names or list(per)
        per_cells = [cell(v, ".1f", 100) for v in per.values()] or [MISSING]
        seen = ([cell(e.get(k), ".3f") for k in ("precision", "recall", "density", "coverage")]
                + [cell(e.get(k), ".3f", 100) for k in ("speckle", "clipped")])
        rows.append([name, e["n"], f"{e['fid_192']:.2f}", f"{e['fid_2048']:.1f}",
                     f"{e['kid_mean']:.4f} ± {e['kid_std']:.4f}", cell(p.get("accuracy"), ".1f", 100),
                     *per_cells, *seen])
    headers = (["set", "images", "FID 192 (course)", "FID 2048", "KID (mean ± std)", "probe acc %"]
               + ([f"{n} %" for n in names] if names else ["per class"])
               + ["precision", "recall", "density", "coverage", "speckle %", "clipped %"])
    out = [pipe_table(headers, rows)]
    pv = (res.get("probe") or {}).get("validation")
    if pv:
        out.append("")
        out.append(f"probe on the real validation split: {pv['accuracy'] * 100:.1f} % of {pv['n']} "
                   f"(trained on {res['probe']['train_images']} training images); KID subset size "
                   f"{res['kid']['subset_size']}, {res['kid']['subsets']} subsets; reference {res['ref']['dir']} "
                   f"({res['ref']['n']} images)")
    return "\n".join(out)
