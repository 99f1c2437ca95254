"""Command line: ``python -m pcnn <command> --help``.

The parser is assembled here from one module per command group, each holding its flags beside
its code (:mod:`.train`, :mod:`.score`, :mod:`.draw`, :mod:`.data`, :mod:`.course`; shared
argument helpers in :mod:`.common`); :func:`main` maps the errors an ordinary mistake causes to
one line and exit code 2. Nothing imports the CLI but ``pcnn/__main__.py``.
"""
from __future__ import annotations

import argparse
import errno
import sys

from pcnn import logs
from pcnn.model.checkpoint import DiskFullError

from . import course, data, draw, score, train


def _os_error_message(e: OSError) -> str | None:
    """One line for the OSErrors an ordinary mistake causes (a file in the way, a full disk), else None."""
    if isinstance(e, DiskFullError):
        return str(e)
    f = e.filename if e.filename is not None else "a file"
    known = {errno.ENOSPC: f"no space left on device while writing {f}",
             errno.EDQUOT: f"disk quota exceeded while writing {f}",
             errno.EEXIST: f"{f} exists and is not a folder (a file is in the way)",
             errno.ENOTDIR: f"{f}: a part of this path is a file, not a folder",
             errno.EISDIR: f"{f} is a folder, not a file",
             errno.EACCES: f"permission denied: {f}", errno.EPERM: f"operation not permitted: {f}",
             errno.EROFS: f"read-only file system: {f}"}
    return known.get(e.errno)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pcnn", description="Class-conditional PixelCNN++: "
                                "train, classify by likelihood, sample, evaluate FID.")
    sub = p.add_subparsers(dest="command", required=True)
    for group in (score, draw, train, data, course):
        group.add_commands(sub)
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logs.show("stderr")  # the library logs (training's precision, fast path, compile lines); show them
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError) as e:  # our errors carry a message meant for people
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a file in the way, a full disk, no permission: not a bug
        msg = _os_error_message(e)
        if msg is None:
            raise
        print(f"error: {msg}", file=sys.stderr)
        return 2
