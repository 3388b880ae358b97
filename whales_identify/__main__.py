"""``python -m whales_identify``: see ``whales_identify.cli``."""

from .cli import main

raise SystemExit(main())
