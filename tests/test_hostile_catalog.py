"""Hostile or broken catalogue files: foreign databases, read-only folders, a full disk. Each case
must give one typed, readable error and leave the catalogue as it was.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from test_catalog import DIM, FakeEmbedder, base_gallery, photo, record, snapshot

from whales_identify.catalog.enrol import enrol_photo
from whales_identify.catalog.store import Catalog, CatalogError

TESTS_DATA = Path(__file__).parent / "data"


# --- 3. databases that are not ours ---------------------------------------------------------------------------------
def _catalogue(tmp_path: Path) -> Path:
    path = tmp_path / "mine.sqlite3"
    with Catalog(path, model_version="fake-1") as cat:
        cat.add_images([record(1, "A", np.ones(DIM, np.float32) / np.sqrt(DIM))])
    return path


@pytest.mark.parametrize(
    ("sql", "match"),
    [
        (
            "CREATE TABLE spy (x);"
            " CREATE TRIGGER leak AFTER INSERT ON images BEGIN INSERT INTO spy VALUES (new.sha256); END",
            "trigger 'leak'",
        ),
        ("CREATE VIEW v AS SELECT * FROM images", "view 'v'"),
        ("CREATE TABLE birds (name TEXT)", "table 'birds'"),
        ("DROP TABLE audit_log", "audit_log"),
        ("ALTER TABLE images ADD COLUMN extra TEXT", "table 'images'"),
        ("CREATE INDEX sneaky ON images(tags)", "index 'sneaky'"),
        ("DELETE FROM schema_version", "schema"),
    ],
    ids=["trigger", "view", "foreign_table", "dropped_table", "altered_table", "extra_index", "schema_version"],
)
def test_a_database_that_is_not_ours_is_refused_on_open(tmp_path: Path, sql: str, match: str) -> None:
    path = _catalogue(tmp_path)
    with sqlite3.connect(path) as conn:
        conn.executescript(sql)
    before = path.read_bytes()
    with pytest.raises(CatalogError, match=match) as info:
        Catalog(path, model_version="fake-1")
    assert "not a catalogue" in str(info.value) or "not this program's" in str(info.value)
    assert path.read_bytes() == before
    if "spy" in sql:  # and the trigger never ran
        with sqlite3.connect(path) as conn:
            assert conn.execute("SELECT count(*) FROM spy").fetchone()[0] == 0


def test_our_own_catalogue_opens_and_is_checked(tmp_path: Path) -> None:
    path = _catalogue(tmp_path)
    with Catalog(path, model_version="fake-1") as cat:
        assert cat.stats()["images"] == 1 and cat.read_only is False


# --- 4. read-only catalogues ----------------------------------------------------------------------------
def test_a_catalogue_that_cannot_be_written_opens_read_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _catalogue(tmp_path)
    before = path.read_bytes()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **k: False if mode & os.W_OK else real_access(p, mode, **k))
    with Catalog(path, base_gallery(), model_version="fake-1") as cat:
        assert cat.read_only and cat.stats()["read_only"] is True
        assert cat.stats()["images"] == 1 and len(cat.gallery()) == 4  # 3 bundled + 1 user photo
        with pytest.raises(CatalogError, match="read-only"):
            cat.add_images([record(2, "B", np.ones(DIM, np.float32) / np.sqrt(DIM))])
        with pytest.raises(CatalogError, match="read-only"):
            cat.remove_individual("A")
        with pytest.raises(sqlite3.OperationalError, match="readonly"):  # sqlite itself refuses too
            cat._conn.execute("DELETE FROM images")
    assert path.read_bytes() == before


_READ_ONLY_CHILD = textwrap.dedent(
    """
    import json, os, sys
    from whales_identify.catalog.store import Catalog, CatalogError
    from whales_identify.cli.main import main
    path = sys.argv[1]
    assert not os.access(path, os.W_OK), "the test could not make the file read-only"
    out = {}
    with Catalog(path, model_version="fake-1") as cat:
        out["read_only"] = cat.read_only
        out["images"] = cat.stats()["images"]
        try:
            cat.remove_individual("A")
        except CatalogError as exc:
            out["write_error"] = str(exc)
    out["stats_rc"] = main(["catalog", "stats", "--db", path])
    out["identify_rc"] = main(["identify", sys.argv[2], "--db", path, "--json"])
    print("RESULT " + json.dumps(out))
    """
)


def _without_root_privileges() -> list[str] | None:
    """A command prefix that runs a child without the power to ignore file permissions (None: impossible)."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return None
    probe = subprocess.run(
        [setpriv, "--bounding-set=-dac_override,-dac_read_search,-fowner", "--", "true"], capture_output=True
    )
    return [setpriv, "--bounding-set=-dac_override,-dac_read_search,-fowner", "--"] if probe.returncode == 0 else None


def test_a_read_only_folder_still_identifies_and_reports(tmp_path: Path) -> None:
    """Real file permissions: a read-only folder and file; the child process cannot override them."""
    prefix = _without_root_privileges()
    if prefix is None:
        pytest.skip("cannot drop the privilege to ignore file permissions here")
    folder = tmp_path / "read-only"
    folder.mkdir()
    try:
        path = folder / "catalog.sqlite3"
        shutil.copy(_catalogue(tmp_path), path)
        path.chmod(0o444)
        folder.chmod(0o555)
        env = {**os.environ, "WHALE_ID_HOME": str(folder)}
        query = next(TESTS_DATA.glob("*.jpg"))
        done = subprocess.run(
            [*prefix, sys.executable, "-c", _READ_ONLY_CHILD, str(path), str(query)],
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
        )
        line = next((s for s in done.stdout.splitlines() if s.startswith("RESULT ")), None)
        assert line is not None, done.stderr[-3000:]
        result = json.loads(line.removeprefix("RESULT "))
        assert result["read_only"] is True and result["images"] == 1
        assert "read-only" in result["write_error"]
        assert result["stats_rc"] == 0 and result["identify_rc"] == 0, done.stderr[-3000:]
        assert "not a catalogue" not in done.stderr
        assert '"read_only": true' in done.stdout
    finally:
        folder.chmod(0o755)
        shutil.rmtree(folder, ignore_errors=True)


# --- 5. a full disk ------------------------------------------------------------------------------------------
def test_disk_full_during_catalog_add_is_one_clear_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from whales_identify.cli.main import main
    from whales_identify.matching.identifier import Identifier

    db = tmp_path / "full.sqlite3"
    with Catalog(db, model_version="fake-1") as cat:
        enrol_photo(cat, FakeEmbedder(), photo(1), "W1", "beluga", new=True)
    before = snapshot(db)
    folder = tmp_path / "survey"
    for i in range(4):
        (folder / "K1").mkdir(parents=True, exist_ok=True)
        (folder / "K1" / f"{i}.jpg").write_bytes(photo(20 + i, (640, 480)))
    monkeypatch.setattr(Identifier, "load", classmethod(lambda cls, *a, **k: FakeEmbedder()))
    connect = Catalog._connect

    def small_disk(self: Catalog) -> sqlite3.Connection:  # the database may grow by two pages only
        conn = connect(self)
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count = {pages + 2}")
        return conn

    monkeypatch.setattr(Catalog, "_connect", small_disk)
    assert main(["catalog", "add", str(folder), "--species", "beluga", "--db", str(db)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "full" in err and "nothing was" in err
    monkeypatch.setattr(Catalog, "_connect", connect)
    assert snapshot(db) == before
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_disk_full_at_commit_is_one_clear_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with Catalog(tmp_path / "c.sqlite3", model_version="fake-1") as cat:
        before = snapshot(cat.path)
        with pytest.raises(CatalogError, match="full"), cat.transaction() as conn:
            conn.execute("INSERT INTO individuals (id, species, created_at) VALUES ('X', 'beluga', 'now')")
            raise sqlite3.OperationalError("database or disk is full")
        assert snapshot(cat.path) == before
        cat.add_images([record(1, "A", np.ones(DIM, np.float32) / np.sqrt(DIM))])  # still usable
