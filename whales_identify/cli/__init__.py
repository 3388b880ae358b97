"""``python -m whales_identify``: the package's functions for scripts and batch jobs (see ``main``)."""

from whales_identify.cli.main import main

__all__ = ["main"]
