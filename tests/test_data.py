"""Tests of pcnn.data.dataset: loading, bad data, value ranges, augmentation, download, CLI."""
import hashlib
import io
import zipfile
from pathlib import Path

import pytest
import torch
from PIL import Image

from pcnn.data import augment as AUG
from pcnn.data import dataset as D
from pcnn.model import likelihood as LIK
from pcnn.data.augment import AugmentConfig
from pcnn.data.dataset import DataError
from pcnn.cli.main import main as cli_main
from pcnn.data.download import download
from pcnn.paths import repo_root

from conftest import data_dir

REAL = data_dir()
needs_real = pytest.mark.skipif(not (REAL / "validation.csv").is_file(),
                                reason=f"CPEN455 data not found at {REAL}")


# ---------------------------------------------------------------------------------------------
# helpers: tiny fake data sets
# ---------------------------------------------------------------------------------------------

def jpeg_bytes(seed=0, size=16, mode="RGB"):
    g = torch.Generator().manual_seed(seed)
    arr = torch.randint(0, 256, (size, size, 3), generator=g, dtype=torch.uint8).numpy()
    im = Image.fromarray(arr, "RGB").convert(mode)
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=95)
    return buf.getvalue()


def make_dataset(root: Path, splits=None, size=16):
    """Write a tiny data set: {split: [(path, label) ...]} with JPEG files, CRLF CSVs."""
    splits = splits or {
        "train": [(f"train/{i:07d}.jpg", i % 4) for i in range(1, 9)],
        "validation": [(f"validation/{i:07d}.jpg", i % 4) for i in range(20, 24)],
        "test": [(f"test/{i:07d}.jpg", -1) for i in range(30, 33)],
    }
    root.mkdir(parents=True, exist_ok=True)
    for split, rows in splits.items():
        for k, (p, _) in enumerate(rows):
            f = root / p
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_bytes(jpeg_bytes(seed=k + 100 * len(split), size=size))
        write_csv(root, split, [f"{p},{lab}" for p, lab in rows])
    return root


def write_csv(root: Path, split: str, lines):
    (root / f"{split}.csv").write_bytes("".join(row + "\r\n" for row in lines).encode())


# ---------------------------------------------------------------------------------------------
# real data
# ---------------------------------------------------------------------------------------------

@needs_real
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torchvision.io.read_image, used for reference
def test_real_validation_split():
    rows = [row for row in (REAL / "validation.csv").read_text().splitlines() if row.strip()]
    v = D.load_split("validation", REAL, show_progress=False)
    assert len(v) == len(rows) == len(v.paths)
    assert v.paths == [row.split(",")[0] for row in rows]
    assert v.labels.tolist() == [int(row.split(",")[1]) for row in rows]
    assert v.images.dtype == torch.uint8 and v.images.shape == (len(rows), 3, 32, 32)
    assert v.labels.dtype == torch.int64
    assert int(v.labels.min()) >= 0 and int(v.labels.max()) <= 3
    # grayscale JPEGs become three equal channels
    gray = [i for i, p in enumerate(v.paths) if Image.open(REAL / p).mode == "L"]
    assert gray, "expected at least one grayscale file in validation"
    for i in gray:
        assert torch.equal(v.images[i, 0], v.images[i, 1]) and torch.equal(v.images[i, 1], v.images[i, 2])
    # the first image is exactly the documented transform of its file
    from torchvision.io import ImageReadMode, read_image
    from torchvision.transforms.v2 import InterpolationMode
    from torchvision.transforms.v2 import functional as TF
    x = read_image(str(REAL / v.paths[0]), mode=ImageReadMode.RGB).float() / 255
    x = TF.resize(x, [32, 32], interpolation=InterpolationMode.BILINEAR, antialias=True)
    assert torch.equal(v.images[0], (x * 255).round().clamp(0, 255).to(torch.uint8))


# ---------------------------------------------------------------------------------------------
# loading fake data, Split
# ---------------------------------------------------------------------------------------------

def test_load_fake_and_subset(tmp_path):
    root = make_dataset(tmp_path / "d")
    tr = D.load_split("train", root, size=8, show_progress=False)
    assert tr.images.shape == (8, 3, 8, 8) and tr.images.dtype == torch.uint8
    assert tr.labels.tolist() == [i % 4 for i in range(1, 9)]
    te = D.load_split("test", root, show_progress=False)
    assert te.labels.tolist() == [-1, -1, -1] and te.images.shape == (3, 3, 32, 32)
    s = tr.subset([3, 1])
    assert s.paths == [tr.paths[3], tr.paths[1]] and torch.equal(s.images[0], tr.images[3])
    assert s.labels.tolist() == [tr.labels[3].item(), tr.labels[1].item()]
    assert len(tr.subset(slice(2, 5))) == 3
    assert tr.subset(torch.tensor([0, 7])).paths == [tr.paths[0], tr.paths[7]]
    assert len(tr.subset(tr.labels == 0)) == 2
    assert tr.class_counts() == {"hamburger": 2, "panda": 2, "koala": 2, "pizza": 2}


def test_grayscale_cmyk_png_rgba_decode(tmp_path):
    root = tmp_path / "d"
    (root / "train").mkdir(parents=True)
    (root / "train" / "g.jpg").write_bytes(jpeg_bytes(1, mode="L"))
    (root / "train" / "c.jpg").write_bytes(jpeg_bytes(2, mode="CMYK"))
    rgba = Image.fromarray(torch.randint(0, 256, (16, 16, 4), dtype=torch.uint8).numpy(), "RGBA")
    rgba.save(root / "train" / "a.png")
    write_csv(root, "train", ["train/g.jpg,0", "train/c.jpg,1", "train/a.png,2"])
    s = D.load_split("train", root, size=16, show_progress=False)
    assert s.images.shape == (3, 3, 16, 16)
    g = s.images[0]
    assert torch.equal(g[0], g[1]) and torch.equal(g[1], g[2])
    rgb = torch.from_numpy(__import__("numpy").array(rgba.convert("RGB"))).permute(2, 0, 1)
    assert torch.equal(s.images[2], rgb)


def test_resize_matches_per_image_course_transform():
    g = torch.Generator().manual_seed(0)
    imgs = torch.randint(0, 256, (5, 3, 64, 64), generator=g, dtype=torch.uint8)
    out = D.resize_uint8(imgs, 32)
    from torchvision.transforms.v2 import InterpolationMode
    from torchvision.transforms.v2 import functional as TF
    for i in range(5):
        x = TF.resize(imgs[i].float() / 255, [32, 32], interpolation=InterpolationMode.BILINEAR, antialias=True)
        assert torch.equal(out[i], (x * 255).round().clamp(0, 255).to(torch.uint8))


# ---------------------------------------------------------------------------------------------
# bad data: each case
# ---------------------------------------------------------------------------------------------

def test_missing_csv_says_where_and_how(tmp_path):
    with pytest.raises(DataError) as e:
        D.load_split("train", tmp_path / "nowhere", show_progress=False)
    msg = str(e.value)
    assert "train.csv" in msg and "not found" in msg and "nowhere" in msg
    assert "python -m pcnn data download" in msg and "PCNN_DATA_DIR" in msg


def test_missing_image_raise_and_skip(tmp_path):
    root = make_dataset(tmp_path / "d")
    (root / "train" / "0000003.jpg").unlink()
    with pytest.raises(DataError, match=r"train\.csv row 3: image file .*0000003\.jpg is missing"):
        D.load_split("train", root, show_progress=False)
    with pytest.warns(UserWarning, match=r"train\.csv row 3: image file .*0000003\.jpg is missing"):
        s = D.load_split("train", root, on_error="skip", show_progress=False)
    assert len(s) == 7 and "train/0000003.jpg" not in s.paths
    assert s.labels.tolist() == [i % 4 for i in range(1, 9) if i != 3]


def test_corrupt_jpeg_raise_lists_all_and_skip_keeps_rest(tmp_path):
    root = make_dataset(tmp_path / "d")
    g = torch.Generator().manual_seed(1)
    rand = bytes(torch.randint(0, 256, (300,), generator=g, dtype=torch.uint8).tolist())
    (root / "train" / "0000002.jpg").write_bytes(rand)
    good = (root / "train" / "0000005.jpg").read_bytes()
    (root / "train" / "0000005.jpg").write_bytes(good[: len(good) // 3])  # truncated
    with pytest.raises(DataError) as e:
        D.load_split("train", root, show_progress=False)
    msg = str(e.value)
    assert "2 of 8 images" in msg
    assert "train.csv row 2: cannot decode image file" in msg and "0000002.jpg" in msg
    assert "train.csv row 5" in msg and "0000005.jpg" in msg and "on_error='skip'" in msg
    with pytest.warns(UserWarning) as rec:
        s = D.load_split("train", root, on_error="skip", show_progress=False)
    texts = [str(w.message) for w in rec]
    assert any("row 2" in t and "0000002.jpg" in t for t in texts)
    assert any("row 5" in t and "0000005.jpg" in t for t in texts)
    assert len(s) == 6 and s.paths == [f"train/{i:07d}.jpg" for i in (1, 3, 4, 6, 7, 8)]
    full = D.load_split("validation", root, show_progress=False)  # other splits unaffected
    assert len(full) == 4


def test_all_images_bad_is_error_even_when_skipping(tmp_path):
    root = tmp_path / "d"
    root.mkdir()
    write_csv(root, "train", ["train/a.jpg,0"])
    with pytest.warns(UserWarning), pytest.raises(DataError, match="none of its 1 images"):
        D.load_split("train", root, on_error="skip", show_progress=False)


@pytest.mark.parametrize("label", ["7", "-2", "4", "cat", "1.5", ""])
def test_unknown_label(tmp_path, label):
    root = make_dataset(tmp_path / "d")
    write_csv(root, "train", ["train/0000001.jpg,0", f"train/0000002.jpg,{label}"])
    with pytest.raises(DataError, match=r"train\.csv row 2 \(train/0000002\.jpg\).*label"):
        D.load_split("train", root, show_progress=False)


@pytest.mark.parametrize("path", ["../x.jpg", "train/../../x.jpg", "/etc/passwd", "C:\\x.jpg", "\\x.jpg", "~/x.jpg"])
def test_path_outside_data_folder(tmp_path, path):
    root = make_dataset(tmp_path / "d")
    write_csv(root, "validation", ["validation/0000020.jpg,1", f"{path},1"])
    with pytest.raises(DataError, match=r"validation\.csv row 2: image path .*(absolute|leaves)"):
        D.load_split("validation", root, show_progress=False)


@pytest.mark.parametrize("line", ["train/0000002.jpg", "train/0000002.jpg,1,2"])
def test_malformed_row(tmp_path, line):
    root = make_dataset(tmp_path / "d")
    write_csv(root, "train", ["train/0000001.jpg,0", line])
    with pytest.raises(DataError, match=r"train\.csv row 2: expected 2 fields"):
        D.load_split("train", root, show_progress=False)


def test_empty_split_and_blank_lines(tmp_path):
    root = make_dataset(tmp_path / "d")
    (root / "test.csv").write_bytes(b"")
    with pytest.raises(DataError, match=r"test\.csv has no rows"):
        D.load_split("test", root, show_progress=False)
    (root / "test.csv").write_bytes(b"\r\n\r\n")
    with pytest.raises(DataError, match="empty"):
        D.load_split("test", root, show_progress=False)
    # blank lines between/after rows and a BOM are tolerated
    (root / "test.csv").write_bytes("\ufefftest/0000030.jpg,-1\r\n\r\ntest/0000031.jpg,-1\r\n\r\n".encode())
    assert len(D.load_split("test", root, show_progress=False)) == 2


def test_bad_arguments(tmp_path):
    root = make_dataset(tmp_path / "d")
    with pytest.raises(ValueError, match="on_error"):
        D.load_split("train", root, on_error="ignore")
    with pytest.raises(ValueError, match="size"):
        D.load_split("train", root, size=0)
    with pytest.raises(DataError, match="invalid split"):
        D.load_split("../train", root)


def test_resolve_data_dir_precedence(tmp_path, monkeypatch):
    monkeypatch.delenv("PCNN_DATA_DIR", raising=False)
    assert D.resolve_data_dir() == repo_root() / "data"  # a checkout: its data/ folder
    monkeypatch.setenv("PCNN_DATA_DIR", str(tmp_path / "env"))
    assert D.resolve_data_dir() == tmp_path / "env"
    assert D.resolve_data_dir(tmp_path / "arg") == tmp_path / "arg"
    assert D.resolve_data_dir(str(tmp_path / "arg")) == tmp_path / "arg"
    # load_split follows the same rule
    make_dataset(tmp_path / "env")
    assert len(D.load_split("validation", show_progress=False)) == 4


# ---------------------------------------------------------------------------------------------
# value ranges, stats, normalisation
# ---------------------------------------------------------------------------------------------

def test_to_float_to_uint8_round_trip():
    v = torch.arange(256, dtype=torch.uint8)
    x = LIK.to_float(v)
    assert x.dtype == torch.float32 and x[0] == -1 and x[255] == 1
    assert torch.equal(x, v.float() / 127.5 - 1)
    assert torch.equal(LIK.to_uint8(x), v)
    # off-grid values round to the nearest level and clamp
    assert LIK.to_uint8(torch.tensor([-3.0, 2.0, x[10] + 0.3 / 127.5])).tolist() == [0, 255, 10]


def test_channel_stats_and_normalize():
    g = torch.Generator().manual_seed(0)
    imgs = torch.randint(0, 256, (20, 3, 8, 8), generator=g, dtype=torch.uint8)
    mean, std = AUG.channel_stats(imgs)
    assert mean.shape == std.shape == (3,)
    x = LIK.to_float(imgs)
    z = AUG.normalize(x, mean, std)
    assert torch.allclose(z.mean((0, 2, 3)), torch.zeros(3), atol=1e-5)
    assert torch.allclose(z.std((0, 2, 3)), torch.ones(3), atol=1e-4)
    assert torch.allclose(AUG.denormalize(z, mean, std), x, atol=1e-6)
    assert torch.allclose(AUG.channel_stats(D.Split("s", imgs, torch.zeros(20, dtype=torch.long),
                                                  ["p"] * 20))[0], mean)


# ---------------------------------------------------------------------------------------------
# augmentation
# ---------------------------------------------------------------------------------------------

AUGS = {
    "hflip": AugmentConfig(),
    "rotate": AugmentConfig(hflip=False, rotate_deg=15.0),
    "jitter": AugmentConfig(hflip=False, color_jitter=0.3),
    "noise": AugmentConfig(hflip=False, noise_std=3.0),
    "cutout": AugmentConfig(hflip=False, cutout=8),
    "translate": AugmentConfig(hflip=False, translate=3),
    "all": AugmentConfig(rotate_deg=10, color_jitter=0.2, noise_std=2, cutout=6, translate=2),
}


def batch(b=16, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (b, 3, size, size), generator=g, dtype=torch.uint8)


@pytest.mark.parametrize("name", sorted(AUGS))
def test_augment_on_grid_shape_deterministic(name):
    cfg = AUGS[name]
    x = batch()
    x0 = x.clone()
    a = AUG.augment(x, cfg, torch.Generator().manual_seed(5))
    b = AUG.augment(x, cfg, torch.Generator().manual_seed(5))
    c = AUG.augment(x, cfg, torch.Generator().manual_seed(6))
    assert a.dtype == torch.uint8 and a.shape == x.shape  # uint8 = on the 8-bit grid by construction
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert not torch.equal(a, x)
    assert torch.equal(x, x0)  # input untouched
    assert torch.equal(LIK.to_uint8(LIK.to_float(a)), a)


def test_hflip_flips():
    x = batch(64)
    y = AUG.augment(x, AugmentConfig(hflip=True), torch.Generator().manual_seed(0))
    same = [torch.equal(y[i], x[i]) for i in range(64)]
    flipped = [torch.equal(y[i], x[i].flip(-1)) for i in range(64)]
    assert all(s or f for s, f in zip(same, flipped))
    assert 10 < sum(flipped) < 54 and sum(same) > 10


def test_identity_and_zero_magnitudes():
    x = batch()
    cfg = AugmentConfig(hflip=False)
    assert cfg.is_identity
    assert torch.equal(AUG.augment(x, cfg, torch.Generator().manual_seed(0)), x)


def test_translate_is_exact_integer_shift():
    x = batch(32, size=16)
    y = AUG.augment(x, AugmentConfig(hflip=False, translate=2), torch.Generator().manual_seed(3))
    for i in range(32):
        ok = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)
              if torch.equal(y[i, :, 2:-2, 2:-2], x[i, :, 2 - dy:14 - dy, 2 - dx:14 - dx])]
        assert ok, f"image {i} is not an integer shift"


def test_noise_and_cutout_magnitudes():
    x = torch.full((64, 3, 16, 16), 100, dtype=torch.uint8)
    y = AUG.augment(x, AugmentConfig(hflip=False, noise_std=5.0), torch.Generator().manual_seed(0))
    assert abs((y.float() - 100).std().item() - 5.0) < 0.3  # noise_std is in 0..255 units
    z = AUG.augment(x, AugmentConfig(hflip=False, cutout=4), torch.Generator().manual_seed(0))
    n = (z == 128).all(1).flatten(1).sum(1)
    assert (n > 0).all() and (n <= 16).all() and (z[z != 128] == 100).all()


def test_augment_config_validation():
    for bad in (dict(rotate_deg=-1), dict(color_jitter=1.0), dict(noise_std=float("nan")),
                dict(cutout=2.5), dict(translate=-1)):
        with pytest.raises(ValueError):
            AugmentConfig(**bad)
    with pytest.raises(ValueError, match="uint8"):
        AUG.augment(batch().float(), AugmentConfig(), torch.Generator())


# ---------------------------------------------------------------------------------------------
# download (offline: a local zip over file://) and CLI
# ---------------------------------------------------------------------------------------------

def make_course_zip(tmp_path: Path, drop=None) -> Path:
    src = make_dataset(tmp_path / "src")
    (src / "README.md").write_text("course data readme")
    if drop:
        (src / drop).unlink()
    zpath = tmp_path / "course.zip"
    top = "CPEN455HW-2023W2-main/"
    with zipfile.ZipFile(zpath, "w") as zf:
        zf.writestr(top + "README.md", "repo readme")
        zf.writestr(top + "model.py", "print('not data')")
        zf.writestr(top + "data/", "")
        for f in sorted(src.rglob("*")):
            if f.is_file():
                zf.write(f, top + "data/" + f.relative_to(src).as_posix())
    return zpath


def test_download_from_local_zip(tmp_path):
    zpath = make_course_zip(tmp_path)
    target = tmp_path / "target"
    target.mkdir()
    (target / "README.md").write_text("ours")
    out = download(target, url=zpath.as_uri(), timeout=5, show_progress=False)
    assert out == target
    assert (target / "README.md").read_text() == "ours"  # not overwritten
    assert not (target / "model.py").exists() and not (target / "data").exists()
    assert not list(target.glob(".pcnn-download-*"))  # temp files cleaned up
    report = D.verify(target)
    assert {s: r["n"] for s, r in report.items()} == {"train": 8, "validation": 4, "test": 3}
    assert not any(r["missing"] for r in report.values())
    assert len(D.load_split("train", target, show_progress=False)) == 8
    # already there: nothing fetched (an unreachable URL would fail otherwise)
    download(target, url="http://127.0.0.1:9/x.zip", timeout=1, show_progress=False)
    # --force fetches again and replaces the split files
    (target / "train" / "0000001.jpg").unlink()
    download(target, url=zpath.as_uri(), timeout=5, force=True, show_progress=False)
    assert (target / "train" / "0000001.jpg").is_file()


def test_download_rejects_incomplete_archive(tmp_path):
    zpath = make_course_zip(tmp_path, drop="validation/0000021.jpg")
    target = tmp_path / "target"
    with pytest.raises(DataError, match=r"incomplete.*validation: 1 missing, e\.g\. validation/0000021\.jpg"):
        download(target, url=zpath.as_uri(), timeout=5, show_progress=False)
    assert not (target / "train.csv").exists()  # nothing half-installed
    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"not a zip")
    with pytest.raises(DataError, match="not a valid zip"):
        download(target, url=bad.as_uri(), timeout=5, show_progress=False)


def test_download_is_pinned_and_checks_the_datas_sha256(tmp_path):
    """Issue 33: a fixed commit, the unpacked data's sha256 checked, an altered or truncated download a
    clear error and never a half-installed folder."""
    from pcnn.data.download import data_digest, file_sha256
    from pcnn.data.download import COURSE_COMMIT, COURSE_DATA_SHA256, COURSE_URL
    assert COURSE_COMMIT in COURSE_URL and "refs/heads" not in COURSE_URL
    assert len(COURSE_DATA_SHA256) == 64
    zpath = make_course_zip(tmp_path)
    # the digest, computed here independently from the files that went into the zip
    src = tmp_path / "src"
    lines = "".join(f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.relative_to(src).as_posix()}\n"
                    for p in sorted(src.rglob("*"), key=lambda q: q.relative_to(src).as_posix()) if p.is_file())
    want = hashlib.sha256(lines.encode()).hexdigest()
    assert data_digest(src) == want and file_sha256(zpath) == hashlib.sha256(zpath.read_bytes()).hexdigest()
    ok = download(tmp_path / "ok", url=zpath.as_uri(), timeout=5, show_progress=False, sha256=want)
    assert (ok / "train.csv").is_file()
    with pytest.raises(DataError, match=r"does not match the pinned course data.*expected 0{64}.*Nothing was installed"):
        download(tmp_path / "bad", url=zpath.as_uri(), timeout=5, show_progress=False, sha256="0" * 64)
    assert not (tmp_path / "bad" / "train.csv").exists() and not list((tmp_path / "bad").glob(".pcnn-download-*"))
    # one byte of one image altered inside the archive: the digest catches it
    altered = tmp_path / "altered.zip"
    with zipfile.ZipFile(zpath) as zin, zipfile.ZipFile(altered, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if info.filename.endswith("train/0000001.jpg"):
                data = data[:-1] + bytes([data[-1] ^ 1])
            zout.writestr(info, data)
    with pytest.raises(DataError, match="sha256 is"):
        download(tmp_path / "alt", url=altered.as_uri(), timeout=5, show_progress=False, sha256=want)
    # a truncated download: the zip is cut short
    cut = tmp_path / "cut.zip"
    cut.write_bytes(zpath.read_bytes()[: zpath.stat().st_size * 2 // 3])
    with pytest.raises(DataError, match="not a valid zip archive or arrived damaged.*nothing was installed"):
        download(tmp_path / "cut", url=cut.as_uri(), timeout=5, show_progress=False, sha256=want)
    assert not (tmp_path / "cut" / "train.csv").exists()
    # a member whose bytes no longer match its CRC (damaged in transit)
    raw = bytearray(zpath.read_bytes())
    i = raw.find(b"train/0000001.jpg,")                        # inside train.csv (stored, not compressed)
    assert i > 0
    raw[i] ^= 0x20
    crc = tmp_path / "crc.zip"
    crc.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="arrived damaged"):
        download(tmp_path / "crc", url=crc.as_uri(), timeout=5, show_progress=False, sha256=want)
    # a compressed (deflated) member damaged in transit: zlib's error, not a traceback
    deflated = tmp_path / "deflated.zip"
    with zipfile.ZipFile(zpath) as zin, zipfile.ZipFile(deflated, "w", compression=zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            zout.writestr(info.filename, zin.read(info))
    clean = deflated.read_bytes()
    with zipfile.ZipFile(deflated) as zf:
        member = next(i for i in zf.infolist() if i.filename.endswith("train/0000001.jpg"))
    start = member.header_offset + 30 + len(member.filename.encode())
    outcomes = set()
    for k in range(0, min(member.compress_size, 60), 3):     # flip bytes across the deflate stream
        raw = bytearray(clean)
        raw[start + k] ^= 0xFF
        deflated.write_bytes(bytes(raw))
        try:
            download(tmp_path / f"d{k}", url=deflated.as_uri(), timeout=5, show_progress=False, sha256=want)
            outcomes.add("installed")
        except DataError as e:
            outcomes.add("damaged" if "arrived damaged" in str(e) else "digest")
        assert not (tmp_path / f"d{k}" / "train.csv").exists() or "installed" in outcomes
    assert "installed" not in outcomes and "damaged" in outcomes


def test_download_offline_message(tmp_path):
    target = tmp_path / "target"
    with pytest.raises(DataError) as e:
        download(target, url="http://127.0.0.1:9/x.zip", timeout=2, show_progress=False)
    msg = str(e.value)
    assert "cannot download" in msg and "offline" in msg
    assert "DSL-Lab/CPEN455HW-2023W2" in msg and str(target.resolve()) in msg and "train.csv" in msg


def cli(argv):
    return cli_main(argv)


def test_cli_info_and_download(tmp_path, capsys):
    root = make_dataset(tmp_path / "d")
    assert cli(["data", "info", "--data-dir", str(root)]) == 0
    out = capsys.readouterr().out
    assert "train" in out and "hamburger" in out and "pizza" in out
    line = next(ln for ln in out.splitlines() if ln.strip().startswith("test"))
    assert line.split()[1] == "3" and line.split()[-2] == "3"  # 3 images, 3 unlabelled
    (root / "train" / "0000001.jpg").unlink()
    assert cli(["data", "info", "--data-dir", str(root)]) == 1
    assert "missing: train/0000001.jpg" in capsys.readouterr().out
    assert cli(["data", "download", "--data-dir", str(tmp_path / "x"),
                "--url", "http://127.0.0.1:9/x.zip", "--timeout", "2"]) == 1
    assert "error: cannot download" in capsys.readouterr().err
    zpath = make_course_zip(tmp_path)
    assert cli(["data", "download", "--data-dir", str(tmp_path / "y"), "--url", zpath.as_uri()]) == 0
    assert (tmp_path / "y" / "test.csv").is_file()


def test_file_sha256_is_the_one_file_hasher(tmp_path):
    """download.file_sha256 reads any file in blocks, in sha256 or any hashlib algorithm (FID weights use sha1)."""
    from pcnn.data.download import file_sha256
    f = tmp_path / "blob.bin"
    data = bytes(range(256)) * 5000   # over one 1 MiB block
    f.write_bytes(data)
    assert file_sha256(f) == hashlib.sha256(data).hexdigest()
    assert file_sha256(f, "sha1") == hashlib.sha1(data).hexdigest()
