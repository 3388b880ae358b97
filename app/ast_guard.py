"""One thread at a time in ``ast.parse``: a CPython bug that made a page fail, worked round.

Python 3.11 keeps the AST constructor's recursion depth in state shared by every thread. When two
threads build ASTs at once and the interpreter switches between them mid-way (a garbage collection
running a finaliser is enough), one of them fails with "SystemError: AST constructor recursion
depth mismatch" (CPython gh-106905). This server has two such callers that overlap: Streamlit
parses each page script before running it, and ``numpy.load`` reads every ``.npy`` header with
``ast.literal_eval`` (the catalogue, the keypoints), which the warm-up thread does while the first
page is drawn. The page then showed an error. ``install()`` (called first by
``app/streamlit_app.py``) wraps ``ast.parse`` in a lock; ``ast.literal_eval`` calls it through the
module, so both paths are covered. Parsing a page takes a few milliseconds and a header microseconds,
so nobody waits long.
"""

from __future__ import annotations

import ast
import threading
from collections.abc import Callable
from typing import Any

_LOCK = threading.Lock()


def install() -> None:
    """Serialise ``ast.parse`` for the whole process (idempotent: wrapped once however often called)."""
    if getattr(ast.parse, "_one_thread_at_a_time", False):
        return
    parse: Callable[..., Any] = ast.parse

    def serialised(*args: Any, **kwargs: Any) -> Any:
        with _LOCK:
            return parse(*args, **kwargs)

    serialised._one_thread_at_a_time = True  # type: ignore[attr-defined]
    serialised.__doc__ = parse.__doc__
    ast.parse = serialised  # type: ignore[assignment]
