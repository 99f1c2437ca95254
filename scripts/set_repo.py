#!/usr/bin/env python
"""Point the notebooks and the README's Colab links at a fork: the one edit a fork makes.

    python scripts/set_repo.py https://github.com/<you>/pcnn

Rewrites the default of ``PCNN_REPO`` in every notebook's set-up cell (the jupytext
script and its .ipynb, outputs untouched) and the owner/name in the README's Colab
links. Run it once after forking, commit, tag ``v<pcnn.__version__>`` and push the tag.
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REPO_LINE = re.compile(r'(PCNN_REPO = os\.environ\.get\("PCNN_REPO", ")([^"]+)("\))')
COLAB = re.compile(r"(https://colab\.research\.google\.com/github/)([^/\s]+/[^/\s]+)(/blob/)")


def set_repo(url: str, root=ROOT) -> list:
    """Use ``url`` (``https://github.com/<owner>/<name>``) everywhere; returns the files changed."""
    m = re.fullmatch(r"https://github\.com/([^/\s]+)/([^/\s]+?)(\.git)?/?", url)
    if not m:
        raise ValueError(f"expected https://github.com/<owner>/<name>, got {url!r}")
    url = f"https://github.com/{m.group(1)}/{m.group(2)}"
    root = Path(root)
    changed = []
    files = sorted((root / "notebooks" / "src").glob("*.py")) + sorted((root / "notebooks").glob("*.ipynb"))
    def sub(text: str) -> str:
        return REPO_LINE.sub(lambda k: k.group(1) + url + k.group(3), text)

    for f in files:
        text = f.read_text()
        if f.suffix == ".ipynb":   # edit the cell sources, keep the layout of pcnn.notebook.strip_file
            nb = json.loads(text)
            for cell in nb["cells"]:
                src = cell["source"]
                cell["source"] = [sub(s) for s in src] if isinstance(src, list) else sub(src)
            new = json.dumps(nb, indent=1, ensure_ascii=False, sort_keys=True) + "\n"
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
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print(__doc__)
        return 2
    for f in set_repo(args[0]):
        print("updated", f.relative_to(ROOT) if ROOT in f.parents else f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
