"""Many photos: one row format (``BatchRow``), run locally (``run_batch``) or on Ray (``run_ray_batch``)."""

from whales_identify.batch.local import BatchRow, run_batch, write_csv
from whales_identify.batch.on_ray import run_ray_batch

__all__ = ["BatchRow", "run_batch", "run_ray_batch", "write_csv"]
