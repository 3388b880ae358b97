"""``train-localiser``: rebuild the animal-box localiser (``models/localiser.onnx``) from the labelled data.

PyTorch is imported only when the command runs, so the other commands start as fast as before.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import fields
from pathlib import Path
from typing import Any

from whales_identify.config import LocaliserTrainConfig


def _cmd_train_localiser(args: argparse.Namespace) -> int:
    from whales_identify.training.localiser import train_localiser

    config = LocaliserTrainConfig(**{f.name: getattr(args, f.name) for f in fields(LocaliserTrainConfig)})
    report = train_localiser(config)
    summary = {key: report[key] for key in ("cross_validation", "test", "onnx_max_abs_diff") if key in report}
    print(json.dumps(summary, indent=2, default=str))
    print(f"wrote {config.out} and its report {Path(config.out).with_suffix('.json')}")
    return 0


def register(subparsers: Any) -> None:
    """Add ``train-localiser`` to the command line; every setting of ``LocaliserTrainConfig`` is an option
    (the lists, such as the pre-cropped sources, only in code)."""
    parser = subparsers.add_parser(
        "train-localiser", help="train the animal-box localiser and export it for ONNX Runtime (CPU)"
    )
    for f in fields(LocaliserTrainConfig):
        default = f.default
        if isinstance(default, tuple):
            parser.set_defaults(**{f.name: default})
        else:
            parser.add_argument("--" + f.name.replace("_", "-"), type=type(default), default=default, dest=f.name)
    parser.set_defaults(func=_cmd_train_localiser)
