"""``keypoints``: build the bundled catalogue's verification keypoints (``models/keypoints.npz``).

RootSIFT keypoints of each right whale's most representative photos (``training/keypoints.py``),
read by the verification stage (``matching/verify.py``) with the bundled catalogue.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from typing import Any

from whales_identify.cli.options import positive_int, print_skipped
from whales_identify.config import DEFAULT_CATALOGUE, DEFAULT_DATA_ROOT, VerifyConfig


def _cmd_keypoints(args: argparse.Namespace) -> int:
    from whales_identify.training.keypoints import build_from_data_root

    changes = {
        name: getattr(args, name)
        for name in ("bundled_per_individual", "max_keypoints", "bundled_max_bytes")
        if getattr(args, name) is not None
    }
    config = replace(VerifyConfig(), **changes)
    report = build_from_data_root(args.data_root, args.catalogue, args.out or config.keypoints_path, config)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(
            f"wrote {report.path}: {report.photos} photos of {report.individuals} individuals, "
            f"median {report.keypoints_median} keypoints, {report.bytes / 1e6:.2f} MB "
            f"(budget {config.bundled_max_bytes / 1e6:.1f} MB)"
        )
        print_skipped(report.skipped)
    return 0


def register(subparsers: Any) -> None:
    """Add ``keypoints`` to the command line."""
    defaults = VerifyConfig()
    parser = subparsers.add_parser(
        "keypoints", help="build the bundled catalogue's verification keypoints (models/keypoints.npz)"
    )
    parser.add_argument("--data-root", default=str(DEFAULT_DATA_ROOT), help="the labelled photos (labels.csv)")
    parser.add_argument("--catalogue", default=str(DEFAULT_CATALOGUE), help="the bundled catalogue they describe")
    parser.add_argument("--out", default=None, help=f"default: {defaults.keypoints_path}")
    parser.add_argument(
        "--per-individual",
        dest="bundled_per_individual",
        type=positive_int,
        default=None,
        help=f"photos per individual (default {defaults.bundled_per_individual})",
    )
    parser.add_argument(
        "--max-keypoints",
        type=positive_int,
        default=None,
        help=f"keypoints kept per photo (default {defaults.max_keypoints}); the query side must use the same",
    )
    parser.add_argument(
        "--max-bytes",
        dest="bundled_max_bytes",
        type=positive_int,
        default=None,
        help=f"refuse a larger file (default {defaults.bundled_max_bytes:,})",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.set_defaults(func=_cmd_keypoints)
