"""``pcnn data download`` / ``pcnn data info``: the CPEN455 data set."""
from __future__ import annotations

import sys


from pcnn.data.dataset import SPLITS, DataError, verify, where_to_put
from pcnn.data.download import COURSE_URL
from pcnn.model.config import CPEN455_CLASSES
from pcnn.data.download import download
from pcnn.paths import DATA_ENV_VAR, resolve_data_dir


def add_commands(sub) -> None:
    """Add this group's subcommands (flags beside their code) to the ``sub`` subparsers."""
    dp = sub.add_parser("data", help="download or inspect the CPEN455 data set",
                        description="Download or inspect the CPEN455 data set.")
    dsub = dp.add_subparsers(dest="data_command", metavar="{download,info}")
    dsub.required = True
    dirhelp = f"data folder (default: ${DATA_ENV_VAR}, else data/ in the checkout, else ./data)"
    dd = dsub.add_parser("download", help="fetch the course's public copy and verify it")
    dd.add_argument("--data-dir", default=None, help=dirhelp)
    dd.add_argument("--url", default=COURSE_URL, help="zip of the course repository (default: the pinned commit, "
                                                      "%(default)s)")
    dd.add_argument("--sha256", default=None, help="expected data sha256 (pcnn.data.download.data_digest; default: the "
                                                   "pinned course data for the default --url, none for another)")
    dd.add_argument("--no-check", action="store_true", help="skip the sha256 check (completeness is still checked)")
    dd.add_argument("--timeout", type=float, default=60.0, help="network timeout in seconds (default: %(default)s)")
    dd.add_argument("--force", action="store_true", help="fetch even if the data set is already there")
    dd.set_defaults(func=cmd_data_download)
    di = dsub.add_parser("info", help="images per split and class, and missing files")
    di.add_argument("--data-dir", default=None, help=dirhelp)
    di.add_argument("--splits", nargs="+", default=list(SPLITS), help="splits to list (default: all)")
    di.set_defaults(func=cmd_data_info)


def cmd_data_download(args) -> int:
    try:
        download(args.data_dir, url=args.url, timeout=args.timeout, force=args.force,
                 sha256=args.sha256 or ("auto" if not args.no_check else None))
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


def cmd_data_info(args) -> int:
    root = resolve_data_dir(args.data_dir)
    status = 0
    print(f"data folder: {root}")
    if not any((root / f"{s}.csv").is_file() for s in args.splits):
        print(f"error: no data set there: {where_to_put(root)}")
        return 1
    print(f"  {'split':<11} {'images':>6}  " + "  ".join(f"{n:>9}" for n in CPEN455_CLASSES)
          + f"  {'unlabelled':>10}  {'missing':>7}")
    for split in args.splits:
        try:
            r = verify(root, [split])[split]
        except DataError as e:
            print(f"  {split:<11} error: {e}")
            status = 1
            continue
        c = r["classes"]
        print(f"  {split:<11} {r['n']:>6}  " + "  ".join(f"{c[n]:>9}" for n in CPEN455_CLASSES)
              + f"  {c.get('unlabelled', 0):>10}  {len(r['missing']):>7}")
        if r["missing"]:
            status = 1
            for p in r["missing"][:5]:
                print(f"    missing: {p}")
    return status
