"""``photos``: build the bundled catalogue's comparison photos (``models/comparison_photos.zip``).

Whole photos of each catalogued individual, chosen by ``matching.selection`` and reduced to fit the
size budget (``ComparisonConfig``); the app shows them beside a new photo (``catalog/photos.py``).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from typing import Any

from whales_identify.cli.options import positive_int, print_skipped
from whales_identify.config import DEFAULT_CATALOGUE, DEFAULT_DATA_ROOT, ComparisonConfig


def _cmd_photos(args: argparse.Namespace) -> int:
    from whales_identify.training.comparison import build_from_data_root

    config = ComparisonConfig()
    changes = {
        name: getattr(args, name)
        for name in ("long_side", "quality", "per_individual", "max_bytes")
        if getattr(args, name) is not None
    }
    if args.right_whale_per_individual is not None:
        changes["species_per_individual"] = (("north_atlantic_right_whale", args.right_whale_per_individual),)
    config = replace(config, **changes)
    report = build_from_data_root(args.data_root, args.catalogue, args.out or config.asset, config)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(
            f"wrote {report.path}: {report.photos} photos of {report.individuals} individuals, "
            f"{report.bytes / 1e6:.2f} MB (budget {config.max_bytes / 1e6:.1f} MB)"
        )
        for species, counts in report.per_species.items():
            print(
                f"  {species}: {counts['photos']} photos, {counts['individuals']} individuals, "
                f"{counts['bytes'] / 1e6:.2f} MB"
            )
        print_skipped(report.skipped)
    return 0


def register(subparsers: Any) -> None:
    """Add ``photos`` to the command line."""
    defaults = ComparisonConfig()
    parser = subparsers.add_parser(
        "photos", help="build the bundled catalogue's comparison photos (models/comparison_photos.zip)"
    )
    parser.add_argument("--data-root", default=str(DEFAULT_DATA_ROOT), help="the labelled photos (labels.csv)")
    parser.add_argument("--catalogue", default=str(DEFAULT_CATALOGUE), help="the bundled catalogue they illustrate")
    parser.add_argument("--out", default=None, help=f"default: {defaults.asset}")
    parser.add_argument(
        "--long-side", type=positive_int, default=None, help=f"stored long side, px (default {defaults.long_side})"
    )
    parser.add_argument("--quality", type=positive_int, default=None, help=f"JPEG quality (default {defaults.quality})")
    parser.add_argument(
        "--per-individual",
        type=positive_int,
        default=None,
        help=f"photos per individual (default {defaults.per_individual})",
    )
    parser.add_argument(
        "--right-whale-per-individual",
        type=positive_int,
        default=None,
        help=f"photos per right whale (default {dict(defaults.species_per_individual)['north_atlantic_right_whale']}; "
        "keep it at least the verification stage's keypoint photos)",
    )
    parser.add_argument(
        "--max-bytes", type=positive_int, default=None, help=f"refuse a larger asset (default {defaults.max_bytes:,})"
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.set_defaults(func=_cmd_photos)
