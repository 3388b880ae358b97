"""Command-line options shared by several commands."""

from __future__ import annotations

import argparse

from whales_identify.config import DEFAULT_CATALOGUE, DEFAULT_CHECKPOINT, DEFAULT_INFERENCE_CONFIG


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def add_model_options(parser: argparse.ArgumentParser, catalogue: bool = True) -> None:
    """Which checkpoint, bundled catalogue and tuned rules to load."""
    parser.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT), help="model checkpoint (.pt)")
    if catalogue:
        parser.add_argument("--catalogue", default=str(DEFAULT_CATALOGUE), help="bundled catalogue (.npz)")
    parser.add_argument("--inference-config", default=str(DEFAULT_INFERENCE_CONFIG), help="tuned rules (.yaml)")


def share(text: str) -> float:
    """A share strictly between 0 and 1 (a prior probability)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"should be a number between 0 and 1, not {text!r}") from None
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"should be between 0 and 1 (both excluded), not {text}")
    return value


def add_search_options(parser: argparse.ArgumentParser) -> None:
    """What ``identify`` and ``batch`` search besides the bundled catalogue, and what they assume of it."""
    parser.add_argument("--db", default=None, help="your catalogue database (default: in your data folder)")
    parser.add_argument("--bundled-only", action="store_true", help="search the bundled catalogue only")
    parser.add_argument("--species", default=None, help="search only individuals of this species")
    parser.add_argument(
        "--catalogued-share",
        type=share,
        default=None,
        metavar="SHARE",
        help="share of your photos that show animals already in the catalogue (e.g. 0.9 for a population "
        "re-sighted every year): the new-individual threshold moves and the probabilities are calibrated for it "
        "(default: the settings file's, 0.5)",
    )


SKIPPED_SHOWN = 10


def print_skipped(skipped: list[str]) -> None:
    """A build command's skipped photos after its summary: the first few with their reasons, then how many more."""
    for line in skipped[:SKIPPED_SHOWN]:
        print(f"  skipped {line}")
    if len(skipped) > SKIPPED_SHOWN:
        print(f"  ... and {len(skipped) - SKIPPED_SHOWN} more skipped")
