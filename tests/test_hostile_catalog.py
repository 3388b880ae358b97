"""Hostile or broken catalogue files: tampered exports, ZIP bombs, foreign databases, read-only
folders, a full disk. Each case must give one typed, readable error and leave the catalogue as it was.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
import tracemalloc
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import pytest
from test_catalog import DIM, FakeEmbedder, base_gallery, make_zip, photo, record, snapshot

from whales_identify.catalog.enrol import enrol_photo, enrol_zip
from whales_identify.catalog.exchange import CatalogImportError, export_catalog, import_catalog
from whales_identify.catalog.store import Catalog, CatalogError
from whales_identify.errors import WhaleIdError

TESTS_DATA = Path(__file__).parent / "data"


def files_of(path: Path) -> dict[str, bytes]:
    """The database and its WAL, byte for byte (what 'untouched' means)."""
    return {p.name: p.read_bytes() for p in sorted(path.parent.glob(path.name + "*")) if not p.name.endswith("-shm")}


@pytest.fixture
def source(tmp_path: Path) -> Catalog:
    """A catalogue with a base and 6 user photos of 3 individuals, to export."""
    cat = Catalog(tmp_path / "source.sqlite3", base_gallery(), actor="src")
    enrol_zip(
        cat,
        FakeEmbedder(),
        make_zip(tmp_path / "s.zip", {f"W{i % 3}/{i}.jpg": photo(i) for i in range(6)}),
        species="beluga",
    )
    yield cat
    cat.close()


@pytest.fixture
def target(tmp_path: Path) -> Catalog:
    cat = Catalog(tmp_path / "target.sqlite3", base_gallery(), actor="dst")
    enrol_photo(cat, FakeEmbedder(), photo(100), "T1", "fin_whale", new=True)
    yield cat
    cat.close()


def tamper(export: Path, out: Path, change: Callable[[dict[str, bytes]], None]) -> Path:
    """Rewrite an export's members with ``change`` and re-sign the manifest's checksums (they are not a
    signature: anyone can recompute them), as an attacker would."""
    with zipfile.ZipFile(export) as src:
        members = {i.filename: src.read(i) for i in src.infolist()}
    manifest = json.loads(members.pop("manifest.json"))
    change(members)
    manifest["checksums"] = {n: hashlib.sha256(d).hexdigest() for n, d in sorted(members.items())}
    if "manifest_patch" in members:
        manifest.update(json.loads(members.pop("manifest_patch")))
        manifest["checksums"] = {n: hashlib.sha256(d).hexdigest() for n, d in sorted(members.items())}
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        dst.writestr("manifest.json", json.dumps(manifest))
        for name, data in members.items():
            dst.writestr(name, data)
    return out


def npy(matrix: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, matrix, allow_pickle=False)
    return buffer.getvalue()


def load_npy(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False).copy()


def csv_rows(data: bytes) -> tuple[list[str], list[dict[str, str]]]:
    import csv

    reader = csv.DictReader(io.StringIO(data.decode()))
    return list(reader.fieldnames or []), list(reader)


def csv_data(columns: list[str], rows: list[dict[str, str]]) -> bytes:
    import csv

    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue().encode()


def edit_table(name: str, edit: Callable[[list[dict[str, str]]], None]) -> Callable[[dict[str, bytes]], None]:
    def change(members: dict[str, bytes]) -> None:
        columns, rows = csv_rows(members[name])
        edit(rows)
        members[name] = csv_data(columns, rows)

    return change


def refused(target: Catalog, bad: Path, match: str) -> CatalogImportError:
    before_rows, before_files = snapshot(target.path), files_of(target.path)
    with pytest.raises(CatalogImportError, match=match) as info:
        import_catalog(target, bad)
    assert isinstance(info.value, WhaleIdError)
    assert "nothing imported" in str(info.value)
    assert snapshot(target.path) == before_rows
    assert files_of(target.path) == before_files  # not a byte written
    return info.value


# --- 1. the rows of an import are validated ---------------------------------------------------------------------
def test_import_of_a_norm_100_embedding_along_the_mean_direction_is_refused(
    source: Catalog, target: Catalog, tmp_path: Path
) -> None:
    export_catalog(source, tmp_path / "e.zip")
    mean = target.gallery().embeddings.mean(axis=0)
    poison = (100 * mean / np.linalg.norm(mean)).astype(np.float32)

    def change(members: dict[str, bytes]) -> None:
        matrix = load_npy(members["embeddings/0.npy"])
        matrix[2] = poison
        members["embeddings/0.npy"] = npy(matrix)

    bad = tamper(tmp_path / "e.zip", tmp_path / "bad.zip", change)
    error = refused(target, bad, r"images\.csv line 4 \(image 3\).*norm 100")
    assert "embeddings/0.npy" in str(error)


def test_the_norm_100_attack_would_answer_every_query(source: Catalog) -> None:
    """Why it matters (the check above is what stops it): stored directly, the poisoned row wins every query."""
    mean = source.gallery().embeddings.mean(axis=0)
    mean /= np.linalg.norm(mean)
    with source.transaction() as conn:
        conn.execute("UPDATE images SET embedding = ? WHERE id = 3", ((100 * mean).astype(np.float32).tobytes(),))
    victim = source.query("SELECT individual_id FROM images WHERE id = 3")[0][0]
    poisoned = source.gallery()
    queries = np.random.default_rng(9).standard_normal((50, DIM)).astype(np.float32) + 3 * mean
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    winners = {str(poisoned.individual_ids[int(np.argmax(poisoned.embeddings @ q))]) for q in queries}
    assert winners == {victim}


@pytest.mark.parametrize(
    ("label", "change", "match"),
    [
        ("wrong dimension", lambda m: m.update({"embeddings/0.npy": npy(np.ones((6, 16), np.float32) / 4)}), "16-d"),
        (
            "not finite",
            lambda m: m.update(
                {
                    "embeddings/0.npy": npy(
                        np.where(np.arange(DIM) == 0, np.nan, load_npy(m["embeddings/0.npy"])).astype(np.float32)
                    )
                }
            ),
            "not finite",
        ),
        (
            "not unit norm",
            lambda m: m.update({"embeddings/0.npy": npy(load_npy(m["embeddings/0.npy"]) * 1.01)}),
            "norm",
        ),
        (
            "float64",
            lambda m: m.update({"embeddings/0.npy": npy(load_npy(m["embeddings/0.npy"]).astype(np.float64))}),
            "float32",
        ),
        ("latitude", edit_table("images.csv", lambda rows: rows[1].update(latitude="91")), r"line 3 .*latitude"),
        ("longitude", edit_table("images.csv", lambda rows: rows[0].update(longitude="-180.5")), r"line 2 .*longitude"),
        ("nan latitude", edit_table("images.csv", lambda rows: rows[0].update(latitude="nan")), "latitude"),
        ("image id", edit_table("images.csv", lambda rows: rows[0].update(id="1.5")), r"line 2.*image id"),
        ("embedding row", edit_table("images.csv", lambda rows: rows[0].update(embedding_row="99")), "embedding_row"),
        (
            "model version",
            edit_table("images.csv", lambda rows: rows[0].update(model_version="x\x00y")),
            "model version",
        ),
        ("sha256", edit_table("images.csv", lambda rows: rows[0].update(sha256="zz")), "sha256"),
        (
            "bad id",
            edit_table("individuals.csv", lambda rows: rows[0].update(id="![x](http://e.x/a.png)")),
            r"individuals\.csv line 2.*individual id",
        ),
        ("formula id", edit_table("individuals.csv", lambda rows: rows[0].update(id="=1+1")), "individual id"),
        ("bad species", edit_table("individuals.csv", lambda rows: rows[0].update(species="Killer Whale!")), "species"),
        (
            "thumbnail",
            lambda m: m.update({"thumbnails/1.jpg": b"not an image at all"}),
            r"thumbnails/1\.jpg.*(image|photo)",
        ),
        ("crop", lambda m: m.update({"crops/2.jpg": photo(1)[:200]}), r"crops/2\.jpg"),
        ("counts", lambda m: m.update({"manifest_patch": b'{"counts": "many"}'}), "counts"),
        (
            "model versions",
            lambda m: m.update({"manifest_patch": b'{"model_versions": {"embeddings/0.npy": 7}}'}),
            "model version",
        ),
    ],
    ids=lambda v: v if isinstance(v, str) and len(v) < 20 else "",
)
def test_tampered_rows_refuse_the_whole_import(
    source: Catalog, target: Catalog, tmp_path: Path, label: str, change: Callable, match: str
) -> None:
    export_catalog(source, tmp_path / "e.zip")
    refused(target, tamper(tmp_path / "e.zip", tmp_path / "bad.zip", change), match)


def test_an_intact_export_still_imports(source: Catalog, target: Catalog, tmp_path: Path) -> None:
    export_catalog(source, tmp_path / "e.zip")
    same = tamper(tmp_path / "e.zip", tmp_path / "same.zip", lambda m: None)
    summary = import_catalog(target, same)
    assert (summary.individuals_created, summary.images_added) == (3, 6)


# --- 2. ZIP bombs and lying directories -----------------------------------------------------------------------------
def _with_big_member(export: Path, out: Path, name: str, size: int) -> Path:
    """The export plus a real, listed member of ``size`` zero bytes (it compresses about 1000:1)."""
    with zipfile.ZipFile(export) as src:
        members = {i.filename: src.read(i) for i in src.infolist()}
    manifest = json.loads(members.pop("manifest.json"))
    digest = hashlib.sha256()
    chunk = bytes(1024 * 1024)
    for _ in range(size // len(chunk)):
        digest.update(chunk)
    manifest["checksums"][name] = digest.hexdigest()
    return _rewritten(out, manifest, members, name, (chunk for _ in range(size // len(chunk))))


def _rewritten(
    out: Path,
    manifest: dict,
    members: dict[str, bytes],
    name: str,
    parts: Iterable[bytes | memoryview],
    zip64: bool = False,
) -> Path:
    """An export written again with this manifest, its other members as they were, and ``name`` streamed from
    ``parts`` (never whole in memory)."""
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        dst.writestr("manifest.json", json.dumps(manifest))
        for member, data in members.items():
            if member != name:
                dst.writestr(member, data)
        with dst.open(name, "w", force_zip64=zip64) as handle:
            for part in parts:
                handle.write(part)
    return out


def _peak_mb(call: Callable[[], object]) -> float:
    tracemalloc.start()
    try:
        call()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak / 1e6


@pytest.mark.parametrize(("size_mb", "match"), [(160, "limit"), (4, "fold")], ids=["over_the_cap", "ratio"])
def test_a_real_high_ratio_member_is_refused_before_it_is_read(
    source: Catalog, target: Catalog, tmp_path: Path, size_mb: int, match: str
) -> None:
    export_catalog(source, tmp_path / "e.zip")
    bomb = _with_big_member(tmp_path / "e.zip", tmp_path / "bomb.zip", "crops/1.jpg", size_mb * 1024 * 1024)
    assert bomb.stat().st_size < 2_000_000  # 160 MB inside a small file

    def attempt() -> None:
        refused(target, bomb, rf"crops/1\.jpg.*{match}")

    assert _peak_mb(attempt) < 20  # the member was never held in memory


def test_many_small_members_that_compress_too_well_are_refused(
    source: Catalog, target: Catalog, tmp_path: Path
) -> None:
    export_catalog(source, tmp_path / "e.zip")
    with (
        zipfile.ZipFile(tmp_path / "e.zip") as src,
        zipfile.ZipFile(tmp_path / "b.zip", "w", zipfile.ZIP_DEFLATED) as dst,
    ):
        for info in src.infolist():
            dst.writestr(info, src.read(info))
        for i in range(12):  # each exactly 1 MiB (not judged alone), together 12 MiB at about 1000:1
            dst.writestr(f"crops/{100 + i}.jpg", bytes(1024 * 1024))
    refused(target, tmp_path / "b.zip", "suspiciously well")


def test_a_listed_1_5_gb_member_is_refused_from_the_directory(source: Catalog, target: Catalog, tmp_path: Path) -> None:
    export_catalog(source, tmp_path / "e.zip")
    data = bytearray((tmp_path / "e.zip").read_bytes())
    # the central directory entry of embeddings/0.npy claims 1.5 GB (its local data is unchanged)
    name = b"embeddings/0.npy"
    at = data.rindex(b"PK\x01\x02", 0, data.rindex(name))
    data[at + 24 : at + 28] = (1_500_000_000).to_bytes(4, "little")
    liar = tmp_path / "liar.zip"
    liar.write_bytes(bytes(data))
    with zipfile.ZipFile(liar) as check:
        assert check.getinfo("embeddings/0.npy").file_size == 1_500_000_000

    def attempt() -> None:
        refused(target, liar, r"embeddings/0\.npy.*(limit|large)")

    assert _peak_mb(attempt) < 20


def test_a_member_larger_than_its_directory_says_is_never_read_past_the_claim(
    source: Catalog, target: Catalog, tmp_path: Path
) -> None:
    export_catalog(source, tmp_path / "e.zip")
    bomb = _with_big_member(tmp_path / "e.zip", tmp_path / "bomb.zip", "crops/1.jpg", 64 * 1024 * 1024)
    data = bytearray(bomb.read_bytes())
    name = b"crops/1.jpg"
    at = data.rindex(b"PK\x01\x02", 0, data.rindex(name))
    data[at + 24 : at + 28] = (1000).to_bytes(4, "little")  # the directory says 1 kB: small, ratio low
    liar = tmp_path / "liar.zip"
    liar.write_bytes(bytes(data))

    def attempt() -> None:
        refused(target, liar, r"crops/1\.jpg")

    assert _peak_mb(attempt) < 20


def test_too_many_members_and_duplicate_names_are_refused(source: Catalog, target: Catalog, tmp_path: Path) -> None:
    from whales_identify.config import ExchangeLimits

    export_catalog(source, tmp_path / "e.zip")
    with pytest.raises(CatalogImportError, match="files"):
        import_catalog(target, tmp_path / "e.zip", limits=ExchangeLimits(max_members=5))
    with zipfile.ZipFile(tmp_path / "e.zip") as src, zipfile.ZipFile(tmp_path / "dup.zip", "w") as dst:
        for info in src.infolist():
            dst.writestr(info, src.read(info))
        with pytest.warns(UserWarning):
            dst.writestr("crops/1.jpg", photo(55))
    refused(target, tmp_path / "dup.zip", "twice")


# --- embeddings files that claim more than the rows use ---------------------------------------------------------
def _declaring(export: Path, out: Path, name: str, rows: int, version: str | None = None) -> Path:
    """The export with ``name`` a real .npy whose header declares ``rows`` × DIM float32 (the real embeddings
    first, when it is the export's own file), listed with its checksum (and under model ``version`` when it is
    a new file). The filler is mostly zeros with a few random kB per MiB: it deflates about 150:1, under the
    200:1 cap, so only the declared shape can give it away."""
    with zipfile.ZipFile(export) as src:
        members = {i.filename: src.read(i) for i in src.infolist()}
    manifest = json.loads(members.pop("manifest.json"))
    head = load_npy(members[name]).tobytes() if name in members else b""
    if version is not None:
        manifest["model_versions"][name] = version
    noise = np.random.default_rng(1).bytes(6000)
    chunk = noise + bytes(1024 * 1024 - len(noise))
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (rows, DIM)})
    digest = hashlib.sha256(header.getvalue() + head)
    left = rows * DIM * 4 - len(head)
    sizes = [len(chunk)] * (left // len(chunk)) + ([left % len(chunk)] if left % len(chunk) else [])
    for size in sizes:
        digest.update(memoryview(chunk)[:size])
    manifest["checksums"][name] = digest.hexdigest()
    parts = itertools.chain([header.getvalue() + head], (memoryview(chunk)[:size] for size in sizes))
    return _rewritten(out, manifest, members, name, parts, zip64=True)


def test_an_embeddings_file_declaring_more_rows_than_images_use_is_refused_before_its_data_is_read(
    source: Catalog, target: Catalog, tmp_path: Path
) -> None:
    export_catalog(source, tmp_path / "e.zip")
    rows = 64 * 1024 * 1024 // (DIM * 4)  # 64 MiB of data for the 6 rows images.csv uses
    bad = _declaring(tmp_path / "e.zip", tmp_path / "bad.zip", "embeddings/0.npy", rows)
    assert bad.stat().st_size < 1_000_000

    def attempt() -> None:
        refused(target, bad, rf"embeddings/0\.npy declares {rows:,} embeddings but images\.csv uses it for 6")

    assert _peak_mb(attempt) < 20  # the header was enough: the 64 MiB were never held


def test_an_embeddings_file_no_image_uses_is_refused(source: Catalog, target: Catalog, tmp_path: Path) -> None:
    export_catalog(source, tmp_path / "e.zip")
    with zipfile.ZipFile(tmp_path / "e.zip") as src:
        versions = json.loads(src.read("manifest.json"))["model_versions"]

    def change(members: dict[str, bytes]) -> None:  # a valid matrix, of a model version no row has
        members["embeddings/1.npy"] = members["embeddings/0.npy"]
        patch = {"model_versions": {**versions, "embeddings/1.npy": "other-1"}}
        members["manifest_patch"] = json.dumps(patch).encode()

    bad = tamper(tmp_path / "e.zip", tmp_path / "bad.zip", change)
    refused(target, bad, r"embeddings/1\.npy belongs to no row of images\.csv")


_IMPORT_RSS_CHILD = textwrap.dedent(
    """
    import sys
    from whales_identify.catalog.exchange import CatalogImportError, import_catalog
    from whales_identify.catalog.store import Catalog

    def peak_mb():  # VmHWM: a child started by pytest inherits its parent's ru_maxrss, not this
        return next(int(s.split()[1]) for s in open("/proc/self/status") if s.startswith("VmHWM:")) // 1024

    with Catalog(sys.argv[1], model_version="fake-1") as cat:
        before = peak_mb()
        try:
            import_catalog(cat, sys.argv[2])
            outcome = "imported"
        except CatalogImportError as exc:
            outcome = "refused: %s" % exc
        print(peak_mb() - before, outcome)
    """
)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="VmHWM is Linux's")
def test_a_5_mb_export_declaring_a_600_mb_matrix_is_refused_in_bounded_memory(
    source: Catalog, target: Catalog, tmp_path: Path
) -> None:
    """Peak RSS growth of the import, in a fresh process: the matrix passes every directory check (under
    1 GiB, about 150:1), so only reading its .npy header first keeps it out of memory."""
    export_catalog(source, tmp_path / "e.zip")
    rows = 600 * 1024 * 1024 // (DIM * 4)
    bad = _declaring(tmp_path / "e.zip", tmp_path / "bad.zip", "embeddings/0.npy", rows)
    assert bad.stat().st_size < 6_000_000
    target.close()  # (closing merges its WAL into the file)
    before = files_of(target.path)
    done = subprocess.run(
        [sys.executable, "-c", _IMPORT_RSS_CHILD, str(target.path), str(bad)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    growth_mb, outcome = done.stdout.split(maxsplit=1)
    assert outcome.startswith("refused:") and "embeddings/0.npy declares" in outcome, outcome
    assert int(growth_mb) < 100, f"peak RSS grew {growth_mb} MB ({outcome.strip()})"
    assert files_of(target.path) == before


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


def test_another_programs_database_is_refused_without_switching_it_to_wal(tmp_path: Path) -> None:
    path = tmp_path / "other.sqlite3"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE foo(x)")
    conn.execute("INSERT INTO foo VALUES (1)")
    conn.commit()
    conn.close()
    before = path.read_bytes()
    with pytest.raises(CatalogError, match="another program's SQLite database"):
        Catalog(path, model_version="fake-1")
    assert path.read_bytes() == before  # the header's WAL bytes included
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.sqlite3"]  # no -wal, -shm or -journal
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
        assert conn.execute("SELECT x FROM foo").fetchall() == [(1,)]


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
