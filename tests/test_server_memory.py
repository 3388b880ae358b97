"""Server memory over many sessions (issue 14, item 7); the figures come from benchmarks/bench_server_memory.py.

Two things grew the server with every photo: ONNX Runtime's CPU arena under the mask network, and
what Streamlit keeps of a closed tab's session after its reconnect time (uploads and media files,
never freed: Streamlit drops the expired session without shutting it down).
"""

from __future__ import annotations

import json
import subprocess
import sys
from types import SimpleNamespace

import pytest
from streamlit.runtime import media_file_manager as mfm
from streamlit.runtime.media_file_manager import MediaFileManager
from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage
from streamlit.runtime.memory_uploaded_file_manager import MemoryUploadedFileManager
from streamlit.runtime.uploaded_file_manager import UploadedFileRec
from streamlit.runtime.websocket_session_manager import WebsocketSessionManager

from app.housekeeping import release_closed_sessions, release_sessions
from whales_identify.config import REPO_DIR


def _runtime_with_files(monkeypatch: pytest.MonkeyPatch, sessions: list[str]) -> SimpleNamespace:
    uploads = MemoryUploadedFileManager("/_stcore/upload_file")
    media = MediaFileManager(MemoryMediaFileStorage("/media"))
    for session in sessions:
        uploads.add_file(session, UploadedFileRec(f"{session}-photo", "photo.jpg", "image/jpeg", b"x" * 100_000))
        monkeypatch.setattr(mfm, "_get_session_id", lambda session=session: session)
        media.add(session.encode() * 1000, "image/png", coordinates=f"1.(2).{session}")
    return SimpleNamespace(uploaded_file_mgr=uploads, media_file_mgr=media)


def test_uploads_and_media_of_sessions_streamlit_no_longer_has_are_freed(monkeypatch: pytest.MonkeyPatch) -> None:
    runtime = _runtime_with_files(monkeypatch, ["alive", "resumable", "expired-1", "expired-2"])
    media_files = runtime.media_file_mgr._storage._files_by_id
    assert len(media_files) == 4

    assert release_sessions(runtime, known={"alive", "resumable"}) == 2

    assert set(runtime.uploaded_file_mgr.file_storage) == {"alive", "resumable"}
    assert runtime.uploaded_file_mgr.get_files("alive", ["alive-photo"])[0].data == b"x" * 100_000
    assert set(runtime.media_file_mgr._files_by_session_and_coord) == {"alive", "resumable"}
    assert len(media_files) == 2  # the expired sessions' images are gone from memory, the others' served
    assert release_sessions(runtime, known={"alive", "resumable"}) == 0  # nothing left to free


def test_nothing_is_freed_outside_a_running_server() -> None:
    assert release_closed_sessions() == 0  # no Streamlit runtime in a test process


def test_the_streamlit_internals_housekeeping_reads_are_there() -> None:
    """A Streamlit upgrade that moves them must fail here, not leak silently on a server."""
    assert callable(WebsocketSessionManager.list_sessions)
    manager = MediaFileManager(MemoryMediaFileStorage("/media"))
    assert isinstance(manager._files_by_session_and_coord, dict) and hasattr(manager, "_lock")
    assert isinstance(MemoryUploadedFileManager("/x").file_storage, dict)
    source = (REPO_DIR / "app" / "streamlit_app.py").read_text()
    assert "housekeeping.start()" in source


MASKS = """
import json
from PIL import Image, ImageDraw
from whales_identify.model.mask import Masker

def rss():
    return int(open("/proc/self/status").read().split("VmRSS:")[1].split()[0]) // 1024

masker = Masker()
masker.warm_up()
first = rss()
for index in range(8):
    image = Image.new("RGB", (640 - 40 * index, 400 + 20 * index), (150, 185, 205))
    ImageDraw.Draw(image).ellipse((100, 150, 400, 300), fill=(45, 50, 58))
    masker.mask(image)
print(json.dumps({"after_first": first, "after_nine": rss()}))
"""


def test_the_mask_model_does_not_grow_with_every_photo() -> None:
    """With ONNX Runtime's arena the mask session held 270 MB after one photo and 480 MB after eleven."""
    done = subprocess.run(
        [sys.executable, "-c", MASKS], cwd=REPO_DIR, check=True, capture_output=True, text=True, timeout=300
    )
    memory = json.loads(done.stdout.strip().splitlines()[-1])
    assert memory["after_first"] < 250, memory  # the process: numpy, Pillow, ONNX Runtime and u2netp
    assert memory["after_nine"] - memory["after_first"] < 40, memory


def test_malloc_is_tuned_on_glibc() -> None:
    from app.housekeeping import _libc, tune_malloc

    if _libc() is None:  # not glibc (musl, macOS): nothing to tune, and nothing is pretended
        assert tune_malloc() is False
    else:
        assert tune_malloc() is True
