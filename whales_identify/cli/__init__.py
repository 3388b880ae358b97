"""``python -m whales_identify``: the package's functions for scripts and batch jobs (see ``main``)."""
