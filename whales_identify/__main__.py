"""``python -m whales_identify``: see ``whales_identify.cli.main``."""

from whales_identify.cli.main import main

raise SystemExit(main())
