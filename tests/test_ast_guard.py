"""app/ast_guard.py: two threads building ASTs at once (a page script, numpy's .npy headers), while
finalisers run mid-way, never fail once the guard is installed (CPython 3.11 failed 223 of 300 times
in this very race: "AST constructor recursion depth mismatch")."""

from __future__ import annotations

import ast
import gc
import sys
import threading
from pathlib import Path

from app import ast_guard

PAGE = Path(__file__).resolve().parents[1] / "app" / "views" / "batch.py"
HEADER = "{'descr': '<f4', 'fortran_order': False, 'shape': (4426, 512), }"  # what numpy.load parses


class _Finalised:
    """Garbage whose finaliser runs Python code: the interpreter may switch threads inside it."""

    def __del__(self) -> None:
        sum(range(50))


def _race(pages: int, headers: int) -> list[str]:
    errors: list[str] = []
    source = PAGE.read_text(encoding="utf-8")

    def parse_pages() -> None:
        for _ in range(pages):
            try:
                ast.parse(source)
            except SystemError as exc:
                errors.append(str(exc))

    def read_headers() -> None:
        for _ in range(headers):
            try:
                assert ast.literal_eval(HEADER)["shape"] == (4426, 512)
            except SystemError as exc:
                errors.append(str(exc))
            garbage: list = [_Finalised() for _ in range(3)]
            garbage.append(garbage)  # a cycle: freed by the collector, finalisers and all

    threads = [threading.Thread(target=parse_pages), threading.Thread(target=read_headers)]
    interval, thresholds = sys.getswitchinterval(), gc.get_threshold()
    sys.setswitchinterval(1e-6)
    gc.set_threshold(50)
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
        gc.set_threshold(*thresholds)
    return errors


def test_parsing_in_two_threads_at_once_never_fails_with_the_guard() -> None:
    ast_guard.install()
    assert _race(pages=200, headers=20_000) == []


def test_the_guard_wraps_once_and_parses_as_before() -> None:
    ast_guard.install()
    wrapped = ast.parse
    ast_guard.install()
    assert ast.parse is wrapped, "installing twice must not wrap twice"
    source = PAGE.read_text(encoding="utf-8")
    assert ast.dump(ast.parse(source)) == ast.dump(compile(source, str(PAGE), "exec", ast.PyCF_ONLY_AST))
    assert ast.literal_eval(HEADER)["fortran_order"] is False
