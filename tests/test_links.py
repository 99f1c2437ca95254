"""Every relative link in the repository's Markdown resolves (README.md, docs/, the results and
checkpoint READMEs, ...), and README.md stays a front page.

A link is ``[text](target)``, ``![alt](target)`` or a reference definition ``[name]: target``,
outside code blocks and inline code. http(s)/mailto links are not fetched. A relative target
must name an existing file or folder (relative to the Markdown file; a leading ``/`` means the
repository root, as on GitHub); a ``#anchor`` (alone or after a ``.md`` file) must be the slug
of a heading in that file, by GitHub's rule: lower case, punctuation other than hyphens,
underscores and spaces removed, spaces to hyphens, ``-1``, ``-2`` ... for repeats.
"""
import re
import subprocess
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[1]
README_MAX_LINES = 160

FENCE = re.compile(r"^\s{0,3}(`{3,}|~{3,})")
INLINE_CODE = re.compile(r"(`+)(?:(?!\1).)+?\1")
INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*(<[^>]*>|[^()\s]*(?:\([^()\s]*\)[^()\s]*)*)(?:\s+(?:\"[^\"]*\"|'[^']*'|\([^)]*\)))?\s*\)")
REF_DEF = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*(<[^>]*>|\S+)")
HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
EXTERNAL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")  # http:, https:, mailto:, ...


def markdown_files(root: Path = ROOT) -> list:
    """The Markdown files git knows of (tracked, or new and not ignored); outside a git checkout,
    every ``*.md`` but those in hidden folders, virtual environments and run folders."""
    try:
        out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "*.md"],
                             cwd=root, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        skip = {"runs", "artifacts", "node_modules"}
        return sorted(p for p in root.rglob("*.md") if not any(
            part.startswith(".") or part in skip for part in p.relative_to(root).parts[:-1]))
    return sorted({root / line for line in out.splitlines() if line and (root / line).is_file()})


def prose_lines(text: str, blank_code: bool = True):
    """(line number, line) outside fenced code blocks, with inline code blanked out (unless not
    ``blank_code``: a heading's anchor keeps the text of its inline code)."""
    fence = None
    for n, line in enumerate(text.splitlines(), 1):
        m = FENCE.match(line)
        if m:
            mark = m.group(1)
            if fence is None:
                fence = mark
                continue
            if mark[0] == fence[0] and len(mark) >= len(fence) and not line.strip()[len(mark):].strip():
                fence = None
                continue
        if fence is None:
            yield n, INLINE_CODE.sub(lambda k: " " * len(k.group(0)), line) if blank_code else line


def links(text: str):
    """(line number, target) of every link in a Markdown text."""
    for n, line in prose_lines(text):
        for m in INLINE_LINK.finditer(line):
            yield n, m.group(1)
        m = REF_DEF.match(line)
        if m:
            yield n, m.group(1)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading's text."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading: its text
    text = re.sub(r"<[^>]+>", "", text).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set:
    """Every heading anchor of a Markdown file, repeats numbered as GitHub does."""
    seen, out = {}, set()
    for _, line in prose_lines(path.read_text(encoding="utf-8"), blank_code=False):
        m = HEADING.match(line)
        if not m:
            continue
        base = slug(m.group(2))
        k = seen.get(base, 0)
        seen[base] = k + 1
        out.add(base if k == 0 else f"{base}-{k}")
    return out


def broken_links(path: Path, root: Path = ROOT) -> list:
    """'file:line: target (why)' for each link of ``path`` that does not resolve."""
    bad = []
    rel = path.relative_to(root) if root in path.parents else path
    for n, target in links(path.read_text(encoding="utf-8")):
        target = target[1:-1] if target.startswith("<") else target
        if not target or EXTERNAL.match(target):
            continue
        file_part, _, anchor = target.partition("#")
        file_part = unquote(file_part)
        if file_part:
            dest = (root / file_part.lstrip("/")) if file_part.startswith("/") else (path.parent / file_part)
            if not dest.exists():
                bad.append(f"{rel}:{n}: {target} (no such file or folder)")
                continue
        else:
            dest = path
        if anchor and dest.is_file() and dest.suffix.lower() == ".md" and unquote(anchor).lower() not in anchors(dest):
            bad.append(f"{rel}:{n}: {target} (no heading with anchor #{anchor} in {dest.name})")
    return bad


FILES = markdown_files()


def test_the_markdown_files_are_found():
    names = {p.relative_to(ROOT).as_posix() for p in FILES}
    assert {"README.md", "checkpoints/README.md", "benchmarks/README.md"} <= names


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_link_resolves(path):
    assert broken_links(path) == []


def test_the_checker_catches_broken_links(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "page.md").write_text("# A page\n\n## Second part: notes (v2)\n\n## The `pcnn/x.py` path\n")
    (tmp_path / "real.png").write_bytes(b"")
    md = tmp_path / "README.md"
    md.write_text(
        "# Title\n\n"
        "[ok](docs/page.md) [ok folder](docs/) ![ok image](real.png) [ok](https://example.com/x.md)\n"
        "[ok anchor](docs/page.md#second-part-notes-v2) [ok here](#title) [ok](<docs/page.md>)\n"
        "[ok code anchor](docs/page.md#the-pcnnxpy-path) [ok title](docs/page.md \"Page\")\n"
        "`[not a link](missing_in_code.md)`\n"
        "```\n[not a link](missing_in_fence.md)\n```\n"
        "[broken](docs/missing.md) ![broken image](missing.png)\n"
        "[bad anchor](docs/page.md#no-such-part) [bad here](#nowhere)\n"
        "[ref]: missing_ref.md\n")
    bad = broken_links(md, root=tmp_path)
    assert [b.split(": ", 1)[1].split(" (")[0] for b in bad] == [
        "docs/missing.md", "missing.png", "docs/page.md#no-such-part", "#nowhere", "missing_ref.md"]
    assert all(b.startswith("README.md:") for b in bad)


def test_slug_follows_github():
    assert slug("Design") == "design"
    assert slug("The GPU fast path (`pcnn/train/accel.py`)") == "the-gpu-fast-path-pcnntrainaccelpy"
    assert slug("Fusion modes (`ModelConfig(fusion=\"first_conv+blocks\")`)") == "fusion-modes-modelconfigfusionfirst_convblocks"
    assert slug("Generation: metrics with real-image floors") == "generation-metrics-with-real-image-floors"


def test_readme_is_a_front_page():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; move detail to docs/"
