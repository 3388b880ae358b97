"""How a headless browser drives this app offline: the Chromium it uses, its flags, and when a page
has settled. One definition for the browser tests (tests/e2e) and the browser benchmarks
(bench_first_photo, bench_server_memory), so that what is measured waits on what is tested."""

from __future__ import annotations

import os
import socket
from pathlib import Path

CHROMIUM = Path(os.environ.get("WHALE_ID_CHROMIUM", "/usr/bin/chromium"))  # Debian's, never a downloaded one
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Never a fixed sleep: every wait is for a condition. This one holds when the app's script run has
# finished and what it drew has painted: every visible image loaded, every visible chart drawn
# (Streamlit loads the chart and map components lazily, after the run itself has ended).
SETTLED = """() => {
    const app = document.querySelector("[data-testid='stApp']");
    const main = document.querySelector("[data-testid='stMain']");
    if (!app || !main || app.getAttribute("data-test-script-state") !== "notRunning") return false;
    // In a closed expander (<details>) a chart is laid out at zero height and never drawn: not shown.
    const shown = (el) => el.getClientRects().length > 0 && !el.closest("details:not([open])");
    const images = [...main.querySelectorAll("img")].filter(shown);
    const charts = [...main.querySelectorAll("[data-testid='stVegaLiteChart']")].filter(shown);
    return images.every((img) => img.complete && img.naturalWidth > 0)
        && charts.every((chart) => chart.querySelector("canvas, svg") !== null);
}"""


def free_port() -> int:
    """A TCP port on localhost that nothing listens on now (for a fresh app server)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
