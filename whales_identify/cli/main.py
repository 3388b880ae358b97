"""Command line: the same functions the app uses, for scripts and batch jobs."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import fields, replace
from pathlib import Path

from whales_identify.cli.catalog import register as register_catalog
from whales_identify.cli.keypoints import register as register_keypoints
from whales_identify.cli.localiser import register as register_localiser
from whales_identify.cli.options import add_model_options, add_search_options, positive_int
from whales_identify.cli.photos import register as register_photos
from whales_identify.config import (
    DEFAULT_CHECKPOINT,
    DEFAULT_DATA_ROOT,
    MODELS_DIR,
    REPO_DIR,
    SUMMARY_NAMED_FILES,
    ModelConfig,
    TrainConfig,
)
from whales_identify.errors import WhaleIdError


def _add_dataclass_options(parser: argparse.ArgumentParser, cls: type, prefix: str = "") -> None:
    for f in fields(cls):
        default = f.default
        if isinstance(default, tuple):
            continue
        kind = type(default)
        flag = "--" + prefix + f.name.replace("_", "-")
        if kind is bool:
            parser.add_argument(flag, type=lambda v: v.lower() in ("1", "true", "yes"), default=default, metavar="BOOL")
        else:
            parser.add_argument(flag, type=kind, default=default, dest=prefix.replace("-", "_") + f.name)


def _cmd_train(args: argparse.Namespace) -> int:
    from whales_identify.training.train import train

    train_config = TrainConfig(**{f.name: getattr(args, f.name) for f in fields(TrainConfig)})
    model_config = ModelConfig(
        **{f.name: getattr(args, "model_" + f.name) for f in fields(ModelConfig) if hasattr(args, "model_" + f.name)}
    )
    meta = train(train_config, model_config)
    if "stopped_after_epoch" in meta:
        print(
            f"stopped after epoch {meta['stopped_after_epoch']}; the same command continues from {meta['resume_file']}"
        )
    else:
        print(f"saved {train_config.out}; last epoch: {meta['history'][-1]}")
    return 0


def _load_identifier(args: argparse.Namespace):
    """The model, searching the bundled catalogue plus the user's own (when it exists)."""
    from whales_identify.services import load_services

    services = load_services(
        args.checkpoint,
        args.catalogue,
        args.inference_config,
        db=args.db,
        user_catalog="off" if args.bundled_only else "if_exists",
        species=args.species,
    )
    if args.catalogued_share is not None:  # the prior the answers are decided and read under (rules.decision_threshold)
        services.identifier.config = replace(services.identifier.config, catalogued_share=args.catalogued_share)
    if services.stale_photos and services.catalog is not None:
        print(
            f"note: {services.stale_photos} photo(s) in {services.catalog.path} were embedded by another model "
            "version and are not searched; run `python -m whales_identify catalog stats` for details",
            file=sys.stderr,
        )
    return services.identifier


def _cmd_identify(args: argparse.Namespace) -> int:
    photos, skipped, refused = _photos_to_identify(args.images)
    results: dict[str, dict] = {label: {"skipped": reason} for label, reason in skipped.items()}
    results.update({label: {"error": reason} for label, reason in refused.items()})
    if not args.json:
        for label, reason in skipped.items():
            print(f"{label}: skipped: {reason}", file=sys.stderr)
        for label, reason in refused.items():
            print(f"{label}: error: {reason}", file=sys.stderr)
    failures = len(refused)
    if photos:  # (no model to load when there is nothing to identify)
        identifier = _load_identifier(args)
    for label, path in photos:
        try:
            result = identifier.identify(path, verify=not args.no_verify)
        except WhaleIdError as exc:
            failures += 1
            results[label] = {"error": str(exc)}
            if not args.json:
                print(f"{label}: error: {exc}", file=sys.stderr)
            continue
        results[label] = result.to_dict()
        if not args.json:
            print(_describe(label, result))
    if args.json:
        print(json.dumps(results, indent=2))
    return 1 if failures else 0


def _photos_to_identify(arguments: list[str]) -> tuple[list[tuple[str, Path]], dict[str, str], dict[str, str]]:
    """The photos named on the command line, a folder standing for the photos in it (recursively).

    Returns (label, path) of each photo to identify, the files skipped inside folders (with why: not a
    photo, a link, a FIFO…) and the folders refused because no photo is in them. A file named directly is
    always tried: the decoder refuses a missing file, a FIFO or a device with a reason, without blocking.
    """
    from whales_identify.inputs.archive import list_folder

    photos: list[tuple[str, Path]] = []
    skipped: dict[str, str] = {}
    refused: dict[str, str] = {}
    for argument in arguments:
        path = Path(argument)
        if not path.is_dir():
            photos.append((argument, path))
            continue
        found = 0
        for file, name, reason in list_folder(path):
            label = str(path / name)
            if reason is None:
                photos.append((label, file))
                found += 1
            else:
                skipped[label] = reason
        if not found:
            refused[argument] = "a folder with no photos in it (JPEG, PNG, WebP, TIFF, BMP or GIF files)"
    return photos, skipped, refused


def _describe(name: str, result) -> str:
    if result.rejected:
        return f"{name}: rejected — {result.rejection_reason}"
    head = f"{name}: {result.species} ({result.species_probability:.0%})"
    verdict = "NEW INDIVIDUAL" if result.new_individual else f"{result.best.individual_id}"
    if result.verified:
        found = result.evidence_for(result.best.individual_id)
        verdict += f", verified ({found.inliers} points)"
    lines = [f"{head} → {verdict} (new-individual probability {result.new_individual_probability:.0%})"]
    for rank, c in enumerate(result.top5, start=1):
        evidence = result.evidence_for(c.individual_id)
        points = f" keypoints={evidence.inliers}" if evidence is not None else ""
        lines.append(
            f"  {rank}. {c.individual_id:<20} {c.species:<28} p={c.probability:.3f} score={c.score:.3f}{points}"
        )
    return "\n".join(lines)


def _cmd_batch(args: argparse.Namespace) -> int:
    from whales_identify.batch.local import run_batch, write_csv

    if args.engine == "ray":
        if args.verify:
            print("error: --verify only applies with --engine local", file=sys.stderr)
            return 2
        return _cmd_batch_ray(args)
    ray_only = [
        flag
        for flag, value in (("--address", args.address), ("--workers", args.workers), ("--restart", args.restart))
        if value
    ]
    if ray_only:
        print(f"error: {', '.join(ray_only)} only apply with --engine ray", file=sys.stderr)
        return 2
    if not Path(args.source).is_dir():  # a bad ZIP (or a FIFO) is said before the model loads or the table starts
        from whales_identify.inputs.archive import check_zip, open_zip

        with open_zip(args.source) as archive:
            check_zip(archive)
    identifier = _load_identifier(args)
    rows = run_batch(identifier, Path(args.source), batch_size=args.batch_size, verify=args.verify)
    counts = {"ok": 0, "error": 0, "skipped": 0}
    problems: dict[str, list[tuple[str, str]]] = {"error": [], "skipped": []}

    def counted():
        for row in rows:
            counts[row.status] += 1
            if row.status in problems and len(problems[row.status]) < SUMMARY_NAMED_FILES:
                problems[row.status].append((row.file, row.error))
            if args.verbose:
                print(f"{row.file}: {row.status} {row.individual_id or row.error}", file=sys.stderr)
            yield row

    if args.csv:
        with open(args.csv, "w", newline="") as handle:
            write_csv(counted(), handle)
    else:
        write_csv(counted(), sys.stdout)
    print(
        f"{counts['ok']} identified, {counts['error']} failed, {counts['skipped']} skipped"
        + (f"; wrote {args.csv}" if args.csv else ""),
        file=sys.stderr,
    )
    _print_problems(problems, counts, args.csv)
    return _batch_exit_code(counts, args.strict)


def _print_problems(problems: dict[str, list[tuple[str, str]]], counts, csv_path: str | None) -> None:
    """The files that failed or were skipped, by name (the first few) and count, after the summary line."""
    where = f" (all in {csv_path})" if csv_path else ""
    for status, heading in (("error", "failed"), ("skipped", "skipped")):
        named, total = problems.get(status, []), counts[status]
        if not total:
            continue
        print(f"{heading}:", file=sys.stderr)
        for name, reason in named:
            reason = reason if len(reason) <= 160 else reason[:157] + "..."
            print(f"  {name}: {reason}", file=sys.stderr)
        if total > len(named):
            print(f"  … and {total - len(named)} more{where}", file=sys.stderr)


def _batch_exit_code(counts, strict: bool) -> int:
    """1 when nothing could be identified although there were files; with --strict, when any file was
    not identified (failed or skipped)."""
    problems = counts["error"] + counts["skipped"]
    if strict:
        return 1 if problems else 0
    return 0 if counts["ok"] or not problems else 1


def _cmd_batch_ray(args: argparse.Namespace) -> int:
    """The same table on Ray (local instance or cluster), appended as it goes and resumed on a rerun."""
    from whales_identify.batch.on_ray import import_ray, plan_work, run_ray_batch

    if not args.csv:
        print(
            "error: --engine ray writes its results as it goes, so a crash resumes: give the file with --csv OUT",
            file=sys.stderr,
        )
        return 2
    import_ray()  # Ray missing, or a bad ZIP: said before the model is loaded
    plan = plan_work(args.source)
    identifier = _load_identifier(args)  # the catalogue the workers search: bundled + yours, as locally
    summary = run_ray_batch(
        identifier,
        plan,
        args.csv,
        checkpoint=args.checkpoint,
        address=args.address,
        workers=args.workers,
        batch_size=args.batch_size,
        restart=args.restart,
        verbose=args.verbose,
    )
    new, total = summary.written, summary.total
    resumed = sum(summary.resumed.values())
    print(
        f"{total['ok']} identified, {total['error']} failed, {total['skipped']} skipped"
        + (f" ({resumed} from the earlier run, {sum(new.values())} now)" if resumed else "")
        + (f"; {summary.workers} Ray worker(s)" if summary.workers else "")
        + f"; wrote {args.csv}",
        file=sys.stderr,
    )
    _print_problems(summary.problems, total, args.csv)
    return _batch_exit_code(total, args.strict)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from whales_identify.matching.identifier import Identifier
    from whales_identify.training.evaluate import evaluate, format_table

    identifier = Identifier.load(args.checkpoint, None, args.inference_config)  # the gallery rows are the catalogue
    report = evaluate(identifier, args.labels, args.root)
    print(format_table(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
        print(f"wrote {args.json}")
    return 0


def _cmd_bundle(args: argparse.Namespace) -> int:
    from whales_identify.training.bundle import BundlePaths, bundle

    summary = bundle(
        BundlePaths(
            Path(args.checkpoint),
            Path(args.data_root),
            Path(args.models_dir),
            Path(args.samples_dir),
            keep_samples=args.keep_samples,
        )
    )
    print(json.dumps(summary, indent=2, default=str))
    return 0


def _cmd_export_onnx(args: argparse.Namespace) -> int:
    from whales_identify.model.checkpoint import load_checkpoint, network_info
    from whales_identify.model.engines import onnx_path_for
    from whales_identify.model.torch_engine import export_onnx

    model, meta = load_checkpoint(args.checkpoint)
    out = Path(args.out) if args.out else onnx_path_for(args.checkpoint)
    export_onnx(model, out, network_info(model, meta))
    print(f"wrote {out} (model version {meta['model_version']}); it is used when it sits beside the checkpoint")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m whales_identify", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a model on labelled photographs (CPU or CUDA)")
    _add_dataclass_options(p, TrainConfig)
    _add_dataclass_options(p, ModelConfig, prefix="model-")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("identify", help="identify photos: species, top-5 individuals or new individual")
    p.add_argument("images", nargs="+", help="photo files, or folders (the photos in them, recursively)")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.add_argument(
        "--no-verify",
        action="store_true",
        help="skip the keypoint verification of the shortlist (right whales; on by default, about 35 ms more a photo)",
    )
    add_model_options(p)
    add_search_options(p)
    p.set_defaults(func=_cmd_identify)

    p = sub.add_parser("batch", help="identify every photo in a ZIP or folder; CSV out")
    p.add_argument("source", help="a .zip file or a folder")
    p.add_argument("--csv", help="write the table here (default: standard output)")
    p.add_argument(
        "--batch-size", type=positive_int, default=None, help="photos per forward pass (default: the tuned one)"
    )
    p.add_argument(
        "--engine",
        choices=("local", "ray"),
        default="local",
        help="local: this process; ray: Ray workers, each loading the model once (pip install -r "
        "requirements-scale.txt); see docs/SCALE.md",
    )
    p.add_argument(
        "--address",
        default=None,
        help="(ray) the Ray cluster to use, e.g. 'auto' on a cluster node (default: start a local instance); "
        "refused in a process already connected to another cluster",
    )
    p.add_argument("--workers", type=positive_int, default=None, help="(ray) model workers (default: one per CPU)")
    p.add_argument(
        "--restart",
        action="store_true",
        help="(ray) overwrite --csv instead of resuming: by default, files already in it are not done again",
    )
    p.add_argument(
        "--verify",
        action="store_true",
        help="verify each right-whale photo's shortlist by keypoints (slower: about 35 ms more a photo, "
        "19 instead of 44 photos/s on one worker; adds the verified and inliers columns' values)",
    )
    p.add_argument(
        "--strict",
        action="store_true",
        help="exit with status 1 when any file failed or was skipped (default: only when none was identified)",
    )
    add_model_options(p)
    add_search_options(p)
    p.set_defaults(func=_cmd_batch)

    p = sub.add_parser("evaluate", help="score the model on a labelled gallery/query CSV")
    p.add_argument("labels", help="CSV with image, individual_id, species, split (gallery|query)")
    p.add_argument("--root", required=True, help="folder the image paths are relative to")
    p.add_argument("--json", help="write the full report here")
    add_model_options(p, catalogue=False)
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("bundle", help="tune a trained checkpoint and write the shipped model files")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data-root", default=str(DEFAULT_DATA_ROOT))
    p.add_argument("--models-dir", default=str(MODELS_DIR))
    p.add_argument("--samples-dir", default=str(REPO_DIR / "tests" / "data"))
    p.add_argument(
        "--keep-samples",
        action="store_true",
        help="keep the sample photos listed in SAMPLES_DIR/samples.csv that still do their job with this model "
        "(a known animal named, a new one new, a negative rejected) and replace only the others",
    )
    p.set_defaults(func=_cmd_bundle)

    p = sub.add_parser("export-onnx", help="export a checkpoint for ONNX Runtime, the fast path (beside it)")
    p.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT))
    p.add_argument("--out", default=None, help="default: the checkpoint's name with .onnx")
    p.set_defaults(func=_cmd_export_onnx)

    register_catalog(sub)
    register_keypoints(sub)
    register_localiser(sub)
    register_photos(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(asctime)s %(message)s")
    try:
        return args.func(args)
    except WhaleIdError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
