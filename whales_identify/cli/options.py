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


def add_search_options(parser: argparse.ArgumentParser) -> None:
    """What ``identify`` and ``batch`` search besides the bundled catalogue."""
    parser.add_argument("--db", default=None, help="your catalogue database (default: in your data folder)")
    parser.add_argument("--bundled-only", action="store_true", help="search the bundled catalogue only")
    parser.add_argument("--species", default=None, help="search only individuals of this species")
