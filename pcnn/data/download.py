"""Download the course's public copy of the CPEN455 data set, pinned and verified before it is
moved into place (``python -m pcnn data download``).

The archive is the course repository at a fixed commit (:data:`COURSE_COMMIT`), and
the unpacked ``data/`` folder must have the sha256 recorded for it
(:data:`COURSE_DATA_SHA256`, :func:`data_digest`): a truncated download (the zip's
CRCs), an altered file or a missing one is a :class:`pcnn.data.dataset.DataError` giving both digests
(one digest for the whole folder: it says *that* the data differs, not which file), and nothing
is moved into the data folder until everything has been checked. Offline,
:func:`download` fails with a :class:`pcnn.data.dataset.DataError` saying where to put the files by hand.
"""
from __future__ import annotations

import hashlib
import http.client
import logging
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
import zlib
from pathlib import Path, PurePosixPath
from typing import Optional

from pcnn.paths import DATA_ENV_VAR
from .dataset import SPLITS, DataError, verify
from pcnn.paths import resolve_data_dir

log = logging.getLogger(__name__)

#: The commit of the course repository whose ``data/`` folder pcnn downloads (the newest on
#: its main branch when pinned, 2024-04-13: "fix drop_last and num_workers"). Pinned so that
#: every student trains on the same bytes; a moving branch could change under them.
COURSE_COMMIT = "47ee408db56040a122f93714a889776997b70ae5"
#: A zip of the course repository at :data:`COURSE_COMMIT` (its ``data/`` folder is the data set).
COURSE_URL = f"https://codeload.github.com/DSL-Lab/CPEN455HW-2023W2/zip/{COURSE_COMMIT}"
#: sha256 of the data at :data:`COURSE_COMMIT` as :func:`pcnn.data.download.data_digest` computes it
#: (the 5,200 files of ``data/``: 3 CSVs and 5,197 JPEGs, 10,057,125 bytes), read from the
#: repository's git objects at that commit. The *content* is checked, not the zip's bytes:
#: GitHub builds archives on request and does not promise the same bytes every time.
COURSE_DATA_SHA256 = "180b6c09d16195b818768ff05bffe61c9386d338bafbb385ccd2f8f6bd9b0545"


def file_sha256(path, algorithm: str = "sha256") -> str:
    """The hex digest of one file's bytes (sha256, or any ``hashlib`` algorithm, e.g. ``"sha1"``),
    read in 1 MiB blocks: the one file hasher of pcnn (downloads, FID weights, GPU exports)."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def data_digest(root) -> str:
    """One sha256 for a whole data folder: the sha256 of the lines ``"<sha256 of file>  <path>\n"``
    (paths relative to ``root`` with ``/``, sorted), over every file below ``root``. Equal digests
    mean the same files with the same bytes; it does not depend on how they were archived."""
    root = Path(root)
    h = hashlib.sha256()
    for rel in sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()):
        h.update(f"{file_sha256(root / rel)}  {rel}\n".encode())
    return h.hexdigest()


def _find_data_prefix(names: list[str]) -> str:
    """The zip folder (``'<repo>-main/data/'`` or ``'data/'``) that holds train.csv."""
    cands = [n[: -len("train.csv")] for n in names
             if n.endswith("data/train.csv") and (n == "data/train.csv" or n.endswith("/data/train.csv"))]
    if not cands:
        raise DataError("the archive has no data/train.csv: it is not the CPEN455 course repository")
    return min(cands, key=lambda p: p.count("/"))


def _safe_extract(zf: zipfile.ZipFile, prefix: str, dest: Path) -> int:
    n = 0
    dest_res = dest.resolve()
    for info in zf.infolist():
        name = info.filename
        if not name.startswith(prefix) or name == prefix:
            continue
        rel = name[len(prefix):]
        parts = PurePosixPath(rel).parts
        if rel.startswith("/") or ".." in parts or "\\" in rel:
            raise DataError(f"unsafe path in archive: {name!r}")
        target = dest.joinpath(*parts)
        if not target.resolve().is_relative_to(dest_res):
            raise DataError(f"unsafe path in archive: {name!r}")
        if info.is_dir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        with zf.open(info) as src, open(target, "wb") as out:
            shutil.copyfileobj(src, out)
        n += 1
    return n


def report_lines(report: dict, root: Path) -> list:
    """What :func:`pcnn.data.dataset.verify` found, one line per split (images per class, missing files)."""
    out = [f"data folder: {root}"]
    for split, r in report.items():
        cls = ", ".join(f"{k} {v}" for k, v in r["classes"].items())
        miss = f", {len(r['missing'])} missing files" if r["missing"] else ""
        out.append(f"  {split:<11} {r['n']:>6} images ({cls}){miss}")
    return out


def download(data_dir=None, url: str = COURSE_URL, timeout: float = 60.0, force: bool = False,
             show_progress: bool = True, sha256: Optional[str] = "auto") -> Path:
    """Fetch the course's public data set and unpack its ``data/`` folder into ``data_dir``.

    ``url`` is a zip of the course repository (default: a codeload zip of the pinned
    :data:`COURSE_COMMIT`; ``file://`` URLs work too). The zip is saved to a
    temporary file beside the target, ``data/`` is extracted into a temporary folder (the zip's
    CRCs catch a truncated or damaged download), its :func:`data_digest` compared with
    ``sha256``, the CSVs checked (every listed image exists), and only then moved into
    ``data_dir`` (the CSVs and split folders; other files are added but never overwrite existing
    ones such as README.md). ``sha256="auto"``: the pinned :data:`COURSE_DATA_SHA256`
    for the default URL, no digest check for another URL (logged); None: no check. If
    ``data_dir`` already holds a complete data set and ``force`` is false, nothing is fetched.
    Network failures (``URLError``, timeouts) raise :class:`DataError` saying where to put the
    files by hand. Progress goes to the ``pcnn.data.download`` logger (``show_progress=False``: quiet).
    Returns ``data_dir``.
    """
    root = resolve_data_dir(data_dir)
    say = log.info if show_progress else (lambda *a: None)
    if sha256 == "auto":
        sha256 = COURSE_DATA_SHA256 if url == COURSE_URL else None
        if sha256 is None:
            log.warning(f"note: {url} is not the pinned course archive; its contents are checked for "
                        "completeness only (pass sha256=... / --sha256 to check its bytes too)")
    if not force:
        try:
            report = verify(root)
        except DataError:
            report = None
        if report is not None and not any(r["missing"] for r in report.values()):
            say(f"{root} already holds the data set (pass force=True / --force to fetch again)")
            for line in report_lines(report, root):
                say(line)
            return root

    root.mkdir(parents=True, exist_ok=True)
    manual = (f"download it by hand from https://github.com/DSL-Lab/CPEN455HW-2023W2/tree/{COURSE_COMMIT} "
              "(folder data/) "
              f"and put its contents into {root.resolve()} ({', '.join(s + '.csv' for s in SPLITS)} "
              f"and the {'/, '.join(SPLITS)}/ folders), or set ${DATA_ENV_VAR} to a folder that has them")
    with tempfile.TemporaryDirectory(prefix=".pcnn-download-", dir=root) as tmp:
        tmp = Path(tmp)
        zpath = tmp / "archive.zip"
        say(f"downloading {url} ...")
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp, open(zpath, "wb") as out:
                total = 0
                while True:
                    chunk = resp.read(1 << 20)
                    if not chunk:
                        break
                    out.write(chunk)
                    total += len(chunk)
        except (urllib.error.URLError, TimeoutError, OSError, ValueError, http.client.HTTPException) as e:
            # HTTPException: e.g. IncompleteRead, a body cut short by the server
            reason = getattr(e, "reason", None) or e
            raise DataError(f"cannot download the CPEN455 data from {url} ({reason}); you may be "
                            f"offline: {manual}") from e
        say(f"downloaded {total / 2**20:.1f} MiB (archive sha256 {file_sha256(zpath)}); unpacking data/ ...")
        try:
            with zipfile.ZipFile(zpath) as zf:
                prefix = _find_data_prefix(zf.namelist())
                staged = tmp / "data"
                staged.mkdir()
                n = _safe_extract(zf, prefix, staged)
        except (zipfile.BadZipFile, EOFError, zlib.error) as e:  # truncated, a bad CRC, a damaged deflate stream
            raise DataError(f"{url} is not a valid zip archive or arrived damaged ({e}); nothing was installed; "
                            f"{manual}") from e
        zpath.unlink()
        if sha256 is not None:
            got = data_digest(staged)
            if got != sha256:
                raise DataError(f"the downloaded data does not match the pinned course data (commit "
                                f"{COURSE_COMMIT[:12]}): its sha256 is {got}, expected {sha256} ({n} files "
                                f"unpacked); a file is altered, missing or extra. Nothing was installed; {manual}")
            say(f"data sha256 {got} matches the pinned course data")
        try:
            report = verify(staged)
        except DataError as e:
            raise DataError(f"the downloaded data set is incomplete: {e}") from e
        missing = {s: r["missing"] for s, r in report.items() if r["missing"]}
        if missing:
            desc = "; ".join(f"{s}: {len(m)} missing, e.g. {m[0]}" for s, m in missing.items())
            raise DataError(f"the downloaded data set is incomplete (images listed in the CSVs "
                            f"are absent: {desc}); {manual}")
        owned = {f"{s}.csv" for s in SPLITS} | set(SPLITS)
        aside = tmp / "replaced"  # an older copy is moved aside (a rename) first, deleted at the end
        aside.mkdir()
        for entry in sorted(staged.iterdir()):
            target = root / entry.name
            if target.exists() or target.is_symlink():
                if entry.name not in owned:
                    continue  # never overwrite our own README.md etc.
                os.replace(target, aside / entry.name)
            os.replace(entry, target)  # same file system (tmp is inside root): each a rename
    say(f"unpacked {n} files into {root}")
    for line in report_lines(verify(root), root):
        say(line)
    return root
