"""Tiny synthetic image sets for the generation-metric tests: four visibly different 'classes'."""
import numpy as np
from PIL import Image

# class k: its own colour and stripe direction/frequency, so Inception features separate them
_BASE = [(200, 40, 40), (40, 180, 60), (50, 60, 210), (220, 200, 40)]
_FREQ = [(1, 0), (0, 3), (2, 2), (5, -1)]


def blob(k, seed, size=32):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    fx, fy = _FREQ[k]
    wave = np.sin(2 * np.pi * (fx * xx + fy * yy) + rng.uniform(0, 6.3))
    img = np.stack([_BASE[k][c] + 45 * wave for c in range(3)], -1) + rng.normal(0, 8, (size, size, 3))
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def write_set(folder, per_class, seed=0, size=32, names="Class{c}_image_{n:02d}.png"):
    folder.mkdir(parents=True, exist_ok=True)
    for c in range(4):
        for n in range(per_class):
            blob(c, seed * 1000 + c * 100 + n, size).save(folder / names.format(c=c, n=n))
    return folder


def write_data_dir(root, per_class=(4, 3, 2), size=64, fmt="JPEG"):
    """A CPEN455-layout folder: train/validation/test with per_class images of each of 4 classes."""
    for split, n, seed in zip(("train", "validation", "test"), per_class, (1, 2, 3)):
        (root / split).mkdir(parents=True, exist_ok=True)
        rows, i = [], 0
        for c in range(4):
            for k in range(n):
                name = f"{split}/{i:07d}.jpg"
                blob(c, seed * 1000 + c * 100 + k, size).save(root / name, format=fmt, quality=95)
                rows.append(f"{name},{c if split != 'test' else -1}")
                i += 1
        (root / f"{split}.csv").write_text("\n".join(rows) + "\n")
    return root
