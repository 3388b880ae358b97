"""What every benchmark's JSON starts with, and how it is written: one place for both."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
from pathlib import Path
from typing import Any


def header(command: str) -> dict[str, str]:
    """Date, machine and the command that reproduces the numbers."""
    return {
        "date": dt.date.today().isoformat(),
        "machine": f"{platform.machine()} CPU, {os.cpu_count()} cores, no GPU",
        "command": command,
    }


def save(result: dict[str, Any], out: str | Path) -> None:
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
    print(f"wrote {path}")
