#!/usr/bin/env python
"""Point the notebooks and the README's Colab links at a fork: the one edit a fork makes.

    python scripts/set_repo.py https://github.com/<you>/pcnn              # pins HEAD's commit
    python scripts/set_repo.py https://github.com/<you>/pcnn --ref v0.2.0  # or a tag / commit you pushed

Rewrites, in every notebook's set-up cell (the jupytext script and its .ipynb, outputs
untouched), the default of ``PCNN_REPO`` and the default of ``PCNN_REF``: the commit the
set-up cell clones on Colab/Kaggle (default: this checkout's HEAD, so push it), and the
owner/name in the README's Colab links. Commit and push afterwards; the pinned commit is
the one before that commit, which differs from it only in these lines.
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from notebook_files import dumps  # noqa: E402  (scripts/ is not a package)

REPO_LINE = re.compile(r'(PCNN_REPO = os\.environ\.get\("PCNN_REPO", ")([^"]+)("\))')
REF_LINE = re.compile(r'(PCNN_REF = os\.environ\.get\("PCNN_REF", ")([^"]+)("\))')
COLAB = re.compile(r"(https://colab\.research\.google\.com/github/)([^/\s]+/[^/\s]+)(/blob/)")
REF_OK = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]*")


def head_commit(root=ROOT) -> str:
    """The full commit hash of ``root``'s HEAD (``git rev-parse HEAD``)."""
    return subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], check=True, text=True,
                          capture_output=True).stdout.strip()


def set_repo(url: str, root=ROOT, ref: Optional[str] = None) -> list:
    """Use ``url`` (``https://github.com/<owner>/<name>``) and ``ref`` (default: ``root``'s HEAD
    commit) everywhere; returns the files changed."""
    m = re.fullmatch(r"https://github\.com/([^/\s]+)/([^/\s]+?)(\.git)?/?", url)
    if not m:
        raise ValueError(f"expected https://github.com/<owner>/<name>, got {url!r}")
    url = f"https://github.com/{m.group(1)}/{m.group(2)}"
    root = Path(root)
    ref = ref or head_commit(root)
    if not REF_OK.fullmatch(ref) or ".." in ref:
        raise ValueError(f"not a git ref: {ref!r}")
    changed = []
    files = sorted((root / "notebooks" / "src").glob("*.py")) + sorted((root / "notebooks").glob("*.ipynb"))

    def sub(text: str) -> str:
        text = REPO_LINE.sub(lambda k: k.group(1) + url + k.group(3), text)
        return REF_LINE.sub(lambda k: k.group(1) + ref + k.group(3), text)

    for f in files:
        text = f.read_text()
        if f.suffix == ".ipynb":   # edit the cell sources, keep the committed layout
            nb = json.loads(text)
            for cell in nb["cells"]:
                src = cell["source"]
                cell["source"] = [sub(s) for s in src] if isinstance(src, list) else sub(src)
            new = dumps(nb)
            new = new if json.loads(new) != json.loads(text) else text
        else:
            new = sub(text)
        if new != text:
            f.write_text(new)
            changed.append(f)
    readme = root / "README.md"
    if readme.is_file():
        text = readme.read_text()
        new = COLAB.sub(lambda k: k.group(1) + f"{m.group(1)}/{m.group(2)}" + k.group(3), text)
        if new != text:
            readme.write_text(new)
            changed.append(readme)
    return changed


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("url", help="https://github.com/<you>/pcnn")
    p.add_argument("--ref", default=None, help="the ref the set-up cells clone (default: HEAD's commit)")
    args = p.parse_args(argv)
    try:
        changed = set_repo(args.url, ROOT, args.ref)
    except (ValueError, subprocess.CalledProcessError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for f in changed:
        print("updated", f.relative_to(ROOT) if ROOT in f.parents else f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
