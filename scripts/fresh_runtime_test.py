#!/usr/bin/env python
"""Simulate a fresh Colab / Kaggle runtime and run numbered notebooks there, top to bottom.

    python scripts/fresh_runtime_test.py                 # 02 (interrupted, resumed), 03, 06, 07 at HEAD, smoke mode
    python scripts/fresh_runtime_test.py 07 --ref issue18 --keep /tmp/fresh

The runtime: a new virtual environment that has this environment's packages (torch,
numpy, ipykernel... as a Colab image has them preinstalled) linked in, but not pcnn;
a kernel running that environment's python; each notebook file copied alone into an
empty folder (as Colab opens it in an empty ``/content``). The notebook runs with
``PCNN_SETUP=remote`` (the set-up cell's Colab/Kaggle path), ``PCNN_REPO=file://<this
checkout>``, ``PCNN_REF=<a commit of it>``, ``PCNN_SMOKE=1`` and ``$PCNN_DATA_DIR`` as a
Kaggle data set would be given. Checks, per notebook: no cell failed; the set-up cell
cloned exactly ``PCNN_REF`` and pip installed pcnn into the new environment; the runtime's
torch was not replaced; the notebook used the shipped checkpoint. Also checks that with
the placeholder ``PCNN_REPO``, and with a ``PCNN_REF`` the repository does not carry, the
set-up cell stops with its one-sentence message.

Notebook 02 walks a student's path: its run lives in ``$PCNN_RUNS_DIR`` (a folder outside the
runtime, as Google Drive is on Colab); the first runtime runs it up to the end of its first
training cell and is then thrown away (the kernel, the folder with the notebook and its clone:
a recycled runtime); a second, new runtime runs it top to bottom. Checks: the second one says
it resumes, and the run has each epoch once (1, 2), as one uninterrupted run would.
Exit status 0 when every check passes.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINT = "pcnn_cpu_film40_disc.safetensors"
#: Entries of this environment's site-packages never linked into the fresh one.
SKIP_PREFIXES = ("pcnn", "__editable__", "_pcnn", "pip", "setuptools", "_distutils_hack", "distutils-precedence",
                 "pkg_resources", "__pycache__")


def run(cmd, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], check=True, text=True, capture_output=True, **kw)


def make_runtime(base: Path) -> Path:
    """A venv in ``base/venv`` with this environment's packages linked in, pcnn left out; returns its python."""
    run([sys.executable, "-m", "venv", base / "venv"])
    py = base / "venv" / "bin" / "python"
    dst = Path(run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
    src = Path(sysconfig.get_paths()["purelib"])
    for entry in sorted(src.iterdir()):
        name = entry.name.lower()
        if name.startswith(SKIP_PREFIXES) or (dst / entry.name).exists():
            continue
        if entry.suffix == ".pth" and ("pcnn" in entry.read_text(errors="ignore") or str(ROOT) in entry.read_text(errors="ignore")):
            continue
        (dst / entry.name).symlink_to(entry)
    probe = subprocess.run([py, "-c", "import pcnn"], capture_output=True, text=True, cwd=base, env=clean_env())
    if probe.returncode == 0:
        raise SystemExit("the fresh runtime can already import pcnn: the simulation would prove nothing")
    run([py, "-c", "import torch, ipykernel"], cwd=base, env=clean_env())
    kernel = base / "jupyter" / "kernels" / "fresh"
    kernel.mkdir(parents=True)
    (kernel / "kernel.json").write_text(json.dumps({
        "argv": [str(py), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "fresh runtime", "language": "python"}))
    return py


def clean_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env.update({k: str(v) for k, v in extra.items()})
    return env


def execute(path: Path, cwd: Path, env: dict, cells=None, timeout: int = 900):
    """Execute ``path`` (all cells, or the first ``cells``) in the fresh kernel; returns (nb, error or None)."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError
    nb = nbformat.read(str(path), as_version=4)
    if cells is not None:
        nb.cells = nb.cells[:cells]
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)   # the kernel process inherits this environment
    try:
        client = NotebookClient(nb, timeout=timeout, kernel_name="fresh", resources={"metadata": {"path": str(cwd)}})
        client.execute()
        return nb, None
    except CellExecutionError as e:
        return nb, e
    finally:
        os.environ.clear()
        os.environ.update(saved)


def outputs_text(nb) -> str:
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if "text" in out:
                parts.append(out["text"])
            parts.append(str(out.get("data", {}).get("text/plain", "")))
            if out.get("output_type") == "error":
                parts.append(f"{out.get('ename')}: {out.get('evalue')}")
    return "\n".join(parts)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("names", nargs="*", default=["02", "03", "06", "07"], help="notebook prefixes (default: 02 03 06 07)")
    p.add_argument("--ref", default=None, help="ref of this checkout to clone (default: HEAD's commit)")
    p.add_argument("--keep", default=None, help="work in this folder and keep it (default: a temporary one)")
    args = p.parse_args(argv)
    ref = args.ref or run(["git", "-C", ROOT, "rev-parse", "HEAD"]).stdout.strip()
    commit = run(["git", "-C", ROOT, "rev-parse", f"{ref}^{{commit}}"]).stdout.strip()
    base = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="pcnn-fresh-"))
    if base.exists() and any(base.iterdir()):
        shutil.rmtree(base)
    base.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    py = make_runtime(base)
    os.environ["JUPYTER_PATH"] = str(base / "jupyter")
    print(f"fresh runtime in {time.perf_counter() - t0:.0f} s: {py} (no pcnn); cloning {ROOT} at {ref} = {commit[:10]}",
          flush=True)
    env = clean_env(PCNN_SETUP="remote", PCNN_REPO=f"file://{ROOT}", PCNN_REF=ref, PCNN_SMOKE="1",
                    MPLBACKEND="module://matplotlib_inline.backend_inline", JUPYTER_PATH=base / "jupyter",
                    TQDM_DISABLE="1")
    env.pop("PCNN_SMOKE_SKIP", None)
    failures = []

    # 1. The placeholder URL: the set-up cell stops with one sentence saying what to set.
    first = sorted((ROOT / "notebooks").glob("07_*.ipynb"))[0]
    folder = base / "placeholder"
    folder.mkdir()
    shutil.copy2(first, folder / first.name)
    placeholder_env = {k: v for k, v in env.items() if k != "PCNN_REPO"}
    nb, err = execute(folder / first.name, folder, placeholder_env, cells=3)
    text = outputs_text(nb) + (str(err) if err else "")
    if "Set PCNN_REPO" not in text or (folder / "pcnn_repo").exists():
        failures.append(f"placeholder PCNN_REPO: no clear stop ({text[-300:]!r})")
    else:
        print("placeholder PCNN_REPO: the set-up cell stops with its message", flush=True)

    # 1b. A ref the repository does not carry: one sentence, not a traceback.
    folder = base / "missing_ref"
    folder.mkdir()
    shutil.copy2(first, folder / first.name)
    nb, err = execute(folder / first.name, folder, {**env, "PCNN_REF": "no-such-ref-in-this-repository"}, cells=3)
    text = outputs_text(nb) + (str(err) if err else "")
    if "Could not fetch PCNN_REF=no-such-ref-in-this-repository" not in text or "Traceback" in text:
        failures.append(f"missing PCNN_REF: no one-sentence stop ({text[-300:]!r})")
    else:
        print("missing PCNN_REF: the set-up cell stops with one sentence", flush=True)

    # 2. Each notebook alone in an empty folder, top to bottom (02: interrupted, then resumed in a new runtime).
    drive = base / "drive"                     # outlives the runtimes, as Google Drive does on Colab
    env["PCNN_RUNS_DIR"] = str(drive)
    for name in args.names:
        found = sorted((ROOT / "notebooks").glob(f"{name}*.ipynb"))
        if len(found) != 1:
            raise SystemExit(f"no single notebook matches {name!r}")
        src = found[0]
        problems = []
        t1 = time.perf_counter()
        if src.stem.startswith("02"):
            import nbformat
            cells = nbformat.read(str(src), as_version=4).cells
            stop = next(k for k, c in enumerate(cells) if "until=EPOCHS_FIRST" in c.source) + 1
            subprocess.run([py, "-m", "pip", "uninstall", "-q", "-y", "pcnn"], capture_output=True)
            first_runtime = base / "content_02_first"
            first_runtime.mkdir()
            shutil.copy2(src, first_runtime / src.name)
            nb, err = execute(first_runtime / src.name, first_runtime, env, cells=stop)
            if err is not None:
                problems.append(f"the first runtime failed: {str(err)[-1500:]}")
            shutil.rmtree(first_runtime)       # the runtime is recycled: its disk is gone, the run on "Drive" stays
        subprocess.run([py, "-m", "pip", "uninstall", "-q", "-y", "pcnn"], capture_output=True)
        folder = base / f"content_{src.stem[:2]}"
        folder.mkdir()
        shutil.copy2(src, folder / src.name)
        nb, err = execute(folder / src.name, folder, env)
        text = outputs_text(nb)
        if err is not None:
            problems.append(f"a cell failed: {str(err)[-1500:]}")
        if src.stem.startswith("02"):
            rows = [json.loads(line) for line in (drive / "notebook_02" / "metrics.jsonl").read_text().splitlines()
                    if line.strip()]
            epochs = [r["epoch"] for r in rows if not r.get("partial")]
            if "resuming $PCNN_RUNS_DIR/notebook_02 after epoch 1" not in text or epochs != [1, 2]:
                problems.append(f"02 did not resume the run kept outside the runtime (epochs {epochs})")
        checkout = folder / "pcnn_repo"
        got = subprocess.run(["git", "-C", checkout, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
        if got != commit:
            problems.append(f"checkout at {got or 'nothing'}, not {commit}")
        where = subprocess.run([py, "-c", "import pcnn, torch; print(pcnn.__file__); print(torch.__file__)"],
                               capture_output=True, text=True, cwd=base, env=clean_env())
        lines = where.stdout.split()
        if where.returncode != 0 or not lines or str(base / "venv") not in lines[0]:
            problems.append(f"pcnn not pip-installed into the fresh runtime: {where.stdout}{where.stderr[-500:]}")
        torch_dir = Path(run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip()) / "torch"
        if not torch_dir.is_symlink():
            problems.append("the runtime's torch was replaced by the install")
        if src.stem.startswith("02"):
            if "the shipped model's recipe" not in text:
                problems.append("02 did not find the shipped checkpoint's recipe among the presets")
        elif f"shipped checkpoint {CHECKPOINT}" not in text:
            problems.append("the notebook did not report the shipped checkpoint")
        if len(list(folder.iterdir())) < 2:
            problems.append("nothing was cloned next to the notebook")
        status = "FAILED" if problems else "ok"
        print(f"{src.name}: {status} in {time.perf_counter() - t1:.0f} s", flush=True)
        for pr in problems:
            print("   ", pr)
        failures += [f"{src.name}: {pr}" for pr in problems]
    if not args.keep:
        shutil.rmtree(base, ignore_errors=True)
    print(f"fresh-runtime simulation: {'FAILED' if failures else 'passed'} in {time.perf_counter() - t0:.0f} s")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
