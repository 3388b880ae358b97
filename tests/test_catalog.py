"""The user's SQLite catalogue: transactions, audit, layering, export/import, concurrency, search.

DB-logic tests use a tiny fake embedder (deterministic, no model); the last test runs the
real ``Identifier`` end to end.
"""

from __future__ import annotations

import io
import multiprocessing
import sqlite3
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from whales_identify.catalog.enrol import EnrolmentError, enrol_photo, enrol_zip
from whales_identify.catalog.exchange import CatalogImportError, export_catalog, import_catalog
from whales_identify.catalog.store import (
    MIGRATIONS,
    SCHEMA_VERSION,
    Catalog,
    CatalogError,
    DuplicateIndividualError,
    NewImage,
    Review,
    StaleModelError,
    UnknownIndividualError,
    default_path,
)
from whales_identify.config import CatalogConfig
from whales_identify.errors import WhaleIdError
from whales_identify.inputs.imaging import decode_image
from whales_identify.matching import rules
from whales_identify.matching.gallery import Gallery
from whales_identify.matching.identifier import ModelOutput

DIM = 48
TESTS_DATA = Path(__file__).parent / "data"


class _Output:
    def __init__(self, embedding: np.ndarray) -> None:
        self.embedding = embedding


class FakeEmbedder:
    """Deterministic 48-d embedding from a 4×4 thumbnail: enough to test the database logic."""

    def __init__(self, model_version: str = "fake-1") -> None:
        self.model_version = model_version
        self.calls = 0
        self.gallery = None

    def prepare(self, source: bytes, long_side: int | None = None) -> Image.Image:
        return decode_image(source, long_side=long_side)

    def forward(self, images: list[Image.Image]) -> list[_Output]:
        self.calls += 1
        out = []
        for image in images:
            v = np.asarray(image.convert("RGB").resize((4, 4)), np.float32).ravel()
            v = v - v.mean() + (1.0 if self.model_version == "fake-1" else -1.0)
            out.append(_Output((v / np.linalg.norm(v)).astype(np.float32)))
        return out

    def set_gallery(self, gallery: Gallery) -> None:
        self.gallery = gallery


def photo(seed: int, size: tuple[int, int] = (96, 64)) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 255, (size[1] // 8, size[0] // 8, 3), dtype=np.uint8)
    image = Image.fromarray(pixels).resize(size, Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def make_zip(path: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return path


def random_unit(rng: np.random.Generator, n: int, dim: int = DIM) -> np.ndarray:
    v = rng.standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def record(
    i: int,
    individual: str,
    embedding: np.ndarray,
    version: str = "fake-1",
    new: bool = True,
    species: str = "humpback_whale",
) -> NewImage:
    return NewImage(
        individual, species, f"{i:064x}", b"thumb", b"crop", embedding, version, new=new, source_name=f"p{i}.jpg"
    )


def base_gallery(version: str = "fake-1") -> Gallery:
    rng = np.random.default_rng(0)
    ids = np.array(["B1", "B1", "B2"])
    return Gallery(
        random_unit(rng, 3),
        ids,
        np.array(["fin_whale", "fin_whale", "blue_whale"]),
        np.array(["b1a", "b1b", "b2"]),
        {"B1": b"jpeg-b1"},
        version,
    )


def snapshot(path: Path) -> list:
    with sqlite3.connect(path) as conn:
        tables = ("individuals", "images", "audit_log")
        return [conn.execute(f"SELECT * FROM {t} ORDER BY 1").fetchall() for t in tables]


@pytest.fixture
def catalog(tmp_path: Path) -> Catalog:
    cat = Catalog(tmp_path / "cat.sqlite3", base_gallery(), actor="tester")
    yield cat
    cat.close()


# --- basics ------------------------------------------------------------------------------------------
def test_schema_wal_and_default_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WHALE_ID_HOME", str(tmp_path / "home" / "sub"))
    assert default_path() == tmp_path / "home" / "sub" / "catalog.sqlite3"
    with Catalog() as cat:
        assert cat.path.exists() and cat.schema_version == SCHEMA_VERSION == 2
        assert cat.query("PRAGMA journal_mode")[0][0] == "wal"
        assert [r[0] for r in cat.query("SELECT version FROM schema_version ORDER BY version")] == [1, 2]
    with Catalog(cat.path) as again:  # reopening does not migrate twice
        assert len(again.query("SELECT * FROM schema_version")) == 2


def test_a_version_1_catalogue_is_upgraded_keeping_its_photos(tmp_path: Path) -> None:
    path = tmp_path / "v1.sqlite3"
    with sqlite3.connect(path) as conn:  # what the previous release created
        MIGRATIONS[1](conn)
        conn.execute("INSERT INTO schema_version VALUES (1, '2026-01-01T00:00:00+00:00')")
        conn.execute("PRAGMA user_version = 1")
    with Catalog(path, base_gallery(), actor="tester") as cat:
        cat.add_images([record(1, "A", random_unit(np.random.default_rng(0), 1)[0])])
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA user_version = 1")  # an old file with a photo: upgraded on the next open
        conn.execute("DELETE FROM schema_version WHERE version = 2")
        conn.execute("DROP TABLE reviews")
        conn.execute("ALTER TABLE images DROP COLUMN keypoints")
    with Catalog(path, base_gallery(), actor="tester") as cat:
        assert cat.schema_version == 2
        assert cat.query("SELECT individual_id, keypoints FROM images")[0][:] == ("A", None)
        assert cat.reviews().empty


def test_reviews_are_recorded_validated_and_saved_with_their_photos(catalog: Catalog) -> None:
    rng = np.random.default_rng(3)
    digest = "ab" * 32
    catalog.record_reviews([Review(digest, "B1", "different", "trip/1.jpg", {"rank": 1})])
    before = snapshot(catalog.path), catalog.reviews()
    for bad in (
        Review(digest, "B1", "maybe"),  # not a decision
        Review("not-a-digest", "B1", "same"),
        Review(digest, "nobody", "same"),  # no such individual
    ):
        with pytest.raises(CatalogError):
            catalog.record_reviews([Review(digest, "B2", "same"), bad])  # all or nothing
        assert snapshot(catalog.path) == before[0] and len(catalog.reviews()) == 1
    image = record(7, "C", random_unit(rng, 1)[0])  # a new individual, created with its review
    verdict = Review(image.sha256, "C", "same", "trip/7.jpg", {"probability": 0.9})
    catalog.add_images([image], reviews=[verdict])
    reviews = catalog.reviews()
    assert list(reviews["decision"]) == ["different", "same"] and reviews["actor"].eq("tester").all()
    assert reviews["details"].iloc[1] == {"probability": 0.9}
    assert list(catalog.reviews(image.sha256)["individual_id"]) == ["C"]
    with pytest.raises(UnknownIndividualError):  # a failed save stores neither photos nor verdicts
        catalog.add_images([record(8, "nobody", random_unit(rng, 1)[0], new=False)], reviews=[verdict])
    assert len(catalog.reviews()) == 2


def test_newer_schema_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite3"
    Catalog(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA user_version = 99")
    with pytest.raises(CatalogError, match="schema version 99"):
        Catalog(path)


def test_not_a_database_refused(tmp_path: Path) -> None:
    path = tmp_path / "notes.sqlite3"
    path.write_bytes(b"these are my notes, not a database" * 100)
    with pytest.raises(CatalogError, match="not a catalogue database"):
        Catalog(path)
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE birds (name TEXT)")
    with pytest.raises(CatalogError, match="another program"):
        Catalog(other)
    with pytest.raises(CatalogError, match="cannot open"):
        Catalog(tmp_path)  # a folder


def test_enrol_photo_new_confirm_and_rules(catalog: Catalog) -> None:
    fake = FakeEmbedder()
    row = enrol_photo(catalog, fake, photo(1), "W1", "humpback_whale", "a.jpg", new=True)
    assert row.status == "added" and row.image_id
    with pytest.raises(DuplicateIndividualError):
        enrol_photo(catalog, fake, photo(2), "W1", "humpback_whale", new=True)
    with pytest.raises(DuplicateIndividualError):  # a bundled id is not new either
        enrol_photo(catalog, fake, photo(2), "B2", "blue_whale", new=True)
    with pytest.raises(UnknownIndividualError):
        enrol_photo(catalog, fake, photo(2), "nobody", new=False)
    assert enrol_photo(catalog, fake, photo(2), "W1", source_name="b.jpg").status == "added"
    # confirming a bundled-only id is allowed; its species comes from the bundled catalogue
    assert enrol_photo(catalog, fake, photo(3), "B2", source_name="c.jpg").status == "added"
    assert catalog.individual("B2")["species"] == "blue_whale"
    with pytest.raises(CatalogError, match="blue_whale"):
        enrol_photo(catalog, fake, photo(4), "B2", "fin_whale")
    log = catalog.audit_log()
    assert log["action"].tolist() == ["enrolled", "confirmed", "confirmed"]
    assert set(log["actor"]) == {"tester"}
    stored = catalog.query("SELECT crop FROM images WHERE id = ?", (row.image_id,))[0][0]
    assert max(Image.open(io.BytesIO(stored)).size) <= CatalogConfig().crop_long_side


def test_duplicate_photo_detected_not_readded(catalog: Catalog, tmp_path: Path) -> None:
    fake = FakeEmbedder()
    first = enrol_photo(catalog, fake, photo(7), "W1", "humpback_whale", "x.jpg", new=True)
    again = enrol_photo(catalog, fake, photo(7), "W1", source_name="copy.jpg")
    assert again.status == "duplicate" and again.image_id == first.image_id
    report = enrol_zip(
        catalog, fake, make_zip(tmp_path / "d.zip", {"W1/x.jpg": photo(7), "W1/y.jpg": photo(8), "W1/y2.jpg": photo(8)})
    )
    assert sorted((r.file, r.status) for r in report.rows) == [
        ("W1/x.jpg", "duplicate"),
        ("W1/y.jpg", "added"),
        ("W1/y2.jpg", "duplicate"),
    ]
    assert catalog.stats()["images"] == 2 and len(catalog.audit_log()) == 2


# --- ZIP enrolment ------------------------------------------------------------------------------------
def test_enrol_zip_folders_and_csv(catalog: Catalog, tmp_path: Path) -> None:
    fake = FakeEmbedder()
    folders = make_zip(tmp_path / "f.zip", {f"W{i % 3}/{i}.jpg": photo(i) for i in range(20)} | {"README.txt": b"hi"})
    report = enrol_zip(catalog, fake, io.BytesIO(folders.read_bytes()), species="killer_whale")  # an upload
    assert report.count("added") == 20 and report.count("skipped") == 1
    batch = CatalogConfig().embed_batch_size
    assert fake.calls == -(-20 // batch)  # embedded in batches, not one by one
    csv_text = "image,individual_id,species\nimgs/a.jpg,B1,\nimgs/b.jpg,N9,beluga\n"
    listed = make_zip(
        tmp_path / "c.zip",
        {"labels.csv": csv_text.encode(), "imgs/a.jpg": photo(100), "imgs/b.jpg": photo(101), "imgs/c.jpg": photo(102)},
    )
    report = enrol_zip(catalog, fake, listed)
    assert {r.file: r.status for r in report.rows} == {
        "imgs/a.jpg": "added",
        "imgs/b.jpg": "added",
        "imgs/c.jpg": "skipped",
    }
    frame = catalog.individuals(include_bundled=True).set_index("id")
    assert frame.loc["N9", "species"] == "beluga" and frame.loc["N9", "origin"] == "user"
    assert frame.loc["B1", "origin"] == "bundled" and frame.loc["B1", "n_photos"] == 3  # 2 bundled + 1 user
    assert frame.loc["W0", "n_photos"] == 7
    # a plain folder with a CSV works the same way
    folder = tmp_path / "survey"
    (folder / "pics").mkdir(parents=True)
    (folder / "labels.csv").write_text("image,individual_id,species\npics/z.jpg,N9,\n")
    (folder / "pics" / "z.jpg").write_bytes(photo(103))
    assert [(r.file, r.status) for r in enrol_zip(catalog, fake, folder).rows] == [("pics/z.jpg", "added")]


def test_enrol_skips_the_same_sidecar_csvs_in_a_folder_as_in_a_zip(catalog: Catalog, tmp_path: Path) -> None:
    """A folder unpacked from a Mac's ZIP keeps ``__MACOSX/labels.csv``: not a second CSV listing."""
    fake = FakeEmbedder()
    csv_text = "image,individual_id,species\nz.jpg,N7,beluga\n"
    files = {"labels.csv": csv_text.encode(), "z.jpg": photo(104), "__MACOSX/labels.csv": b"\x00\x05junk"}
    zipped = enrol_zip(catalog, fake, make_zip(tmp_path / "mac.zip", files)).rows
    folder = tmp_path / "unpacked"
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    (folder / "z.jpg").write_bytes(photo(105))  # another photo, not a duplicate of the zipped one
    unpacked = enrol_zip(catalog, fake, folder).rows
    assert [(r.file, r.status) for r in zipped] == [(r.file, r.status) for r in unpacked] == [("z.jpg", "added")]


def test_enrol_zip_bad_file_rolls_back(catalog: Catalog, tmp_path: Path) -> None:
    fake = FakeEmbedder()
    enrol_photo(catalog, fake, photo(1), "W1", "humpback_whale", new=True)
    before = snapshot(catalog.path)
    files = {f"W2/{i}.jpg": photo(10 + i) for i in range(5)} | {"W2/bad.jpg": b"not a jpeg at all"}
    with pytest.raises(EnrolmentError, match=r"bad\.jpg") as info:
        enrol_zip(catalog, fake, make_zip(tmp_path / "bad.zip", files), species="humpback_whale")
    statuses = {r.file: r.status for r in info.value.report.rows}
    assert statuses["W2/bad.jpg"] == "error"
    assert snapshot(catalog.path) == before
    # a file listed in the CSV but missing from the ZIP: same all-or-nothing
    csv_text = "image,individual_id,species\na.jpg,W5,beluga\nmissing.jpg,W5,beluga\n"
    with pytest.raises(EnrolmentError, match=r"missing\.jpg"):
        enrol_zip(catalog, fake, make_zip(tmp_path / "m.zip", {"x.csv": csv_text.encode(), "a.jpg": photo(50)}))
    assert snapshot(catalog.path) == before


def test_add_images_is_atomic(catalog: Catalog) -> None:
    rng = np.random.default_rng(1)
    before = snapshot(catalog.path)
    batch = [record(1, "A", random_unit(rng, 1)[0]), record(2, "nobody", random_unit(rng, 1)[0], new=False)]
    with pytest.raises(UnknownIndividualError):
        catalog.add_images(batch)
    assert snapshot(catalog.path) == before


# --- other operations -----------------------------------------------------------------------------------
def test_rename_merge_remove_audit(catalog: Catalog) -> None:
    rng = np.random.default_rng(2)
    catalog.add_images([record(i, "A" if i < 3 else "B", random_unit(rng, 1)[0]) for i in range(5)])
    catalog.rename("A", "A2", name="Scarface", notes="notched fin")
    assert catalog.individual("A2")["name"] == "Scarface" and catalog.individual("A") is None
    assert len(catalog.images("A2")) == 3
    with pytest.raises(DuplicateIndividualError):
        catalog.rename("A2", "B")
    with pytest.raises(UnknownIndividualError):
        catalog.rename("B1", "X")  # bundled-only ids are read-only
    assert catalog.merge("A2", "B") == 3
    assert len(catalog.images("B")) == 5 and catalog.individual("A2") is None
    image_id = int(catalog.images("B")["id"].iloc[0])
    catalog.remove_image(image_id)
    assert catalog.remove_individual("B") == 4
    assert catalog.stats()["images"] == 0
    actions = catalog.audit_log()["action"].tolist()
    assert actions == ["enrolled"] * 5 + ["renamed", "merged", "removed", "removed"]
    merged = catalog.audit_log("B").query("action == 'merged'")
    assert merged["details"].iloc[0] == {"from": "A2", "into": "B", "images": 3}


def test_gallery_layers_filters_and_thumbnails(catalog: Catalog) -> None:
    rng = np.random.default_rng(3)
    imgs = [
        record(1, "U1", random_unit(rng, 1)[0], species="fin_whale"),
        record(2, "U2", random_unit(rng, 1)[0], species="beluga"),
    ]
    imgs[0].tags, imgs[0].latitude, imgs[0].longitude = "survey-2024, north", 60.0, -20.0
    catalog.add_images(imgs)
    g = catalog.gallery()
    assert len(g) == 5 and g.stale == 0 and set(g.individuals) == {"B1", "B2", "U1", "U2"}
    assert g.thumbnails["B1"] == b"jpeg-b1" and g.thumbnails["U1"] == b"thumb"
    fin = catalog.gallery(species="fin_whale")
    assert sorted(fin.individual_ids.tolist()) == ["B1", "B1", "U1"]
    assert catalog.gallery(tag="north").individual_ids.tolist() == ["U1"]
    assert len(catalog.gallery(tag="nort")) == 0
    assert catalog.gallery(bbox=(59, -21, 61, -19)).individual_ids.tolist() == ["U1"]
    assert len(catalog.gallery(bbox=(0, 0, 1, 1))) == 0


def test_stale_model_version_detected_and_reembedded(catalog: Catalog) -> None:
    fake_old = FakeEmbedder("fake-0")
    enrol_photo(catalog, fake_old, photo(1), "W1", "humpback_whale", new=True)
    enrol_photo(catalog, fake_old, photo(2), "W1")
    # the catalogue runs model fake-1 (its base's version): both rows are stale
    assert catalog.stale_count() == 2 and catalog.stale_count("fake-0") == 0
    g = catalog.gallery()
    assert g.stale == 2 and "W1" not in set(g.individual_ids)
    assert catalog.stats()["stale"] == 2
    new_model = FakeEmbedder("fake-1")
    assert catalog.reembed(new_model) == 2
    assert catalog.stale_count() == 0
    g = catalog.gallery()
    assert g.stale == 0 and (g.individual_ids == "W1").sum() == 2
    # recomputed from the stored crop: identical to enrolling the same photo with the new model
    expected = new_model.forward([Image.open(io.BytesIO(catalog.query("SELECT crop FROM images")[0][0]))])[0]
    np.testing.assert_array_equal(g.embeddings[g.individual_ids == "W1"][0], expected.embedding)
    assert catalog.audit_log()["action"].iloc[-1] == "reembedded"
    # a base from another model is left out too, and said so
    with Catalog(catalog.path, base_gallery("other")) as other:
        g = other.gallery(model_version="fake-1")
        assert g.stale_base == 3 and len(g) == 2


def test_mixed_embedding_dimensions_refused(tmp_path: Path) -> None:
    base = base_gallery("")  # a bundled catalogue that does not say which model made it
    with Catalog(tmp_path / "d.sqlite3", base, model_version="m2") as cat:
        cat.add_images([record(1, "U", np.ones(16, np.float32) / 4, version="m2")])
        with pytest.raises(StaleModelError, match="16-d"):
            cat.gallery()


def _top_individuals(gallery, query: np.ndarray, k: int) -> list[tuple[str, float]]:
    """The one search path: best photo per individual, then the top k."""
    best = gallery.best_per_individual(gallery.similarities(query))
    return [(str(gallery.individuals[i]), float(best[i])) for i in rules.top_k(best, k)]


# --- search -------------------------------------------------------------------------------------------------
def test_search_equals_brute_force_1k(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    emb = random_unit(rng, 1000)
    owners = rng.integers(0, 300, 1000)
    species = np.where(owners % 2 == 0, "fin_whale", "beluga")
    with Catalog(tmp_path / "s.sqlite3", model_version="fake-1") as cat:
        cat.add_images([record(i, f"I{owners[i]:03d}", emb[i], species=str(species[i])) for i in range(1000)])
        for query in random_unit(rng, 20):
            for sp in (None, "beluga"):
                mask = np.ones(1000, bool) if sp is None else species == sp
                sims = emb[mask] @ query
                best: dict[str, float] = {}
                for owner, s in zip(owners[mask], sims, strict=True):
                    best[f"I{owner:03d}"] = max(best.get(f"I{owner:03d}", -2.0), float(s))
                expected = sorted(best.items(), key=lambda kv: (-kv[1], kv[0]))[:10]
                got = _top_individuals(cat.gallery(species=sp), query, 10)
                assert [i for i, _ in got] == [i for i, _ in expected]
                np.testing.assert_allclose([s for _, s in got], [s for _, s in expected], rtol=1e-5, atol=1e-6)
        # the cache is invalidated by a write (this process or another)
        target = random_unit(rng, 1)[0]
        cat.add_images([record(5000, "Z", target)])
        assert _top_individuals(cat.gallery(), target, 1)[0][0] == "Z"
        with Catalog(cat.path, model_version="fake-1") as other:
            other.remove_individual("Z")
        assert _top_individuals(cat.gallery(), target, 1)[0][0] != "Z"


# --- export / import ----------------------------------------------------------------------------------------
def _table_rows(cat: Catalog) -> tuple[list, list]:
    """Every column, except the keypoints: an export does not carry them (they are recomputed from the crop)."""
    individuals = [tuple(r) for r in cat.query("SELECT * FROM individuals ORDER BY id")]
    images = [tuple(r)[:-1] for r in cat.query("SELECT * FROM images ORDER BY sha256")]
    assert cat.query("SELECT * FROM images LIMIT 1")[0].keys()[-1] == "keypoints"
    return individuals, images


def test_export_import_round_trip_exact(catalog: Catalog, tmp_path: Path) -> None:
    fake = FakeEmbedder()
    enrol_zip(
        catalog,
        fake,
        make_zip(tmp_path / "e.zip", {f"W{i % 4}/{i}.jpg": photo(i) for i in range(10)}),
        species="beluga",
        tags="t1,t2",
    )
    enrol_photo(catalog, FakeEmbedder("fake-0"), photo(99), "B1", source_name="old-model.jpg")
    catalog.rename("W1", name='Névé, "quoted"', notes="line1\nline2")
    with catalog.transaction() as conn:
        conn.execute("UPDATE images SET latitude = 0.1 + 0.2, longitude = -1e-300 WHERE id = 1")
    manifest = export_catalog(catalog, tmp_path / "export.zip")
    assert manifest["counts"] == {"individuals": 5, "images": 11, "audit_log": 12}
    with Catalog(tmp_path / "copy.sqlite3", base_gallery(), actor="importer") as copy:
        summary = import_catalog(copy, tmp_path / "export.zip")
        assert (summary.images_added, summary.individuals_created, summary.duplicates) == (11, 5, 0)
        assert _table_rows(copy) == _table_rows(catalog)
        # imported photos get their keypoints again from the same crops at import: the very same records
        assert copy.missing_keypoints() == 0
        kept = "SELECT sha256, keypoints FROM images ORDER BY sha256"
        assert [tuple(r) for r in copy.query(kept)] == [tuple(r) for r in catalog.query(kept)]
        assert set(copy.audit_log()["action"]) == {"imported"}
        # importing again adds nothing
        assert import_catalog(copy, tmp_path / "export.zip").duplicates == 11
        assert _table_rows(copy) == _table_rows(catalog)


@pytest.mark.parametrize("damage", ["not_zip", "foreign", "checksum", "truncated", "extra_member"])
def test_corrupt_import_refused_without_touching_db(catalog: Catalog, tmp_path: Path, damage: str) -> None:
    fake = FakeEmbedder()
    enrol_photo(catalog, fake, photo(1), "W1", "humpback_whale", new=True)
    export = tmp_path / "export.zip"
    export_catalog(catalog, export)
    with Catalog(tmp_path / "target.sqlite3", base_gallery()) as target:
        enrol_photo(target, fake, photo(2), "T1", "beluga", new=True)
        before = snapshot(target.path)
        bad = tmp_path / "bad.zip"
        data = export.read_bytes()
        if damage == "not_zip":
            bad.write_bytes(b"hello, I am a text file")
        elif damage == "truncated":
            bad.write_bytes(data[: len(data) // 2])
        else:
            with zipfile.ZipFile(export) as src, zipfile.ZipFile(bad, "w") as dst:
                for info in src.infolist():
                    content = src.read(info)
                    if damage == "foreign" and info.filename == "manifest.json":
                        content = content.replace(b"whales_identify-catalog-export", b"someone-else")
                    if damage == "checksum" and info.filename.startswith("crops/"):
                        content = content[:-2] + b"\x00\x00"
                    dst.writestr(info, content)
                if damage == "extra_member":
                    dst.writestr("crops/999.jpg", b"smuggled")
        with pytest.raises(CatalogImportError) as info:
            import_catalog(target, bad)
        assert isinstance(info.value, WhaleIdError) and str(info.value)
        assert snapshot(target.path) == before


def test_import_conflicting_species_refused(catalog: Catalog, tmp_path: Path) -> None:
    enrol_photo(catalog, FakeEmbedder(), photo(1), "B1", source_name="x.jpg")  # fin_whale, from the base
    export_catalog(catalog, tmp_path / "e.zip")
    with Catalog(tmp_path / "t.sqlite3") as target:  # no base: B1 will be created as a user id
        target.add_images([record(1, "B1", np.ones(DIM, np.float32) / np.sqrt(DIM), species="beluga")])
        before = snapshot(target.path)
        with pytest.raises(CatalogImportError, match="nothing imported"):
            import_catalog(target, tmp_path / "e.zip")
        assert snapshot(target.path) == before


# --- concurrency ----------------------------------------------------------------------------------------------
def _writer(path: str, worker: int, start: multiprocessing.synchronize.Event) -> None:
    rng = np.random.default_rng(worker)
    with Catalog(path, model_version="fake-1", actor=f"worker{worker}") as cat:
        start.wait()
        for i in range(50):
            cat.add_images([record(worker * 1000 + i, f"w{worker}-{i}", random_unit(rng, 1)[0])])


def test_two_processes_enrolling_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "shared.sqlite3"
    Catalog(path).close()  # schema created once
    ctx = multiprocessing.get_context("fork")
    start = ctx.Event()
    workers = [ctx.Process(target=_writer, args=(str(path), w, start)) for w in (1, 2)]
    for p in workers:
        p.start()
    start.set()
    for p in workers:
        p.join(timeout=120)
        assert p.exitcode == 0
    with Catalog(path) as cat:
        assert cat.stats()["images"] == 100
        log = cat.audit_log()
        assert len(log) == 100 and log["actor"].value_counts().to_dict() == {"worker1": 50, "worker2": 50}


# --- CLI ---------------------------------------------------------------------------------------------------------
def test_cli_list_stats_export_import_remove(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    from whales_identify.cli.catalog import register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    db = tmp_path / "cli.sqlite3"
    with Catalog(db, model_version="fake-1") as cat:
        enrol_photo(cat, FakeEmbedder(), photo(1), "W1", "beluga", new=True)

    def run(*argv: str) -> str:
        args = parser.parse_args(["catalog", *argv])
        assert args.func(args) == 0
        return capsys.readouterr().out

    assert "W1" in run("list", "--db", str(db))
    assert '"images": 1' in run("stats", "--db", str(db))
    run("export", str(tmp_path / "x.zip"), "--db", str(db))
    assert "imported 1 photos" in run("import", str(tmp_path / "x.zip"), "--db", str(tmp_path / "other.sqlite3"))
    assert "removed W1" in run("remove", "W1", "--db", str(db))
    with pytest.raises(CatalogError):
        run("remove", "W1", "--db", str(db))


def test_cli_add_photo_and_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import argparse

    from whales_identify.cli.catalog import register
    from whales_identify.matching.identifier import Identifier

    monkeypatch.setattr(Identifier, "load", classmethod(lambda cls, *a, **k: FakeEmbedder()))
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    db = str(tmp_path / "cli.sqlite3")
    (tmp_path / "one.jpg").write_bytes(photo(1))
    folder = tmp_path / "survey"
    for i in range(3):
        (folder / f"K{i % 2}").mkdir(parents=True, exist_ok=True)
        (folder / f"K{i % 2}" / f"{i}.jpg").write_bytes(photo(20 + i))

    def run(*argv: str) -> str:
        args = parser.parse_args(["catalog", *argv, "--db", db, "--actor", "cli-user"])
        assert args.func(args) == 0
        return capsys.readouterr().out

    assert "added" in run("add", str(tmp_path / "one.jpg"), "--id", "W1", "--species", "beluga", "--new")
    assert "duplicate" in run("add", str(tmp_path / "one.jpg"), "--id", "W1")
    assert "3 added" in run("add", str(folder), "--species", "orca", "--tags", "survey1")
    with Catalog(db) as cat:
        assert cat.stats()["images"] == 4 and set(cat.audit_log()["actor"]) == {"cli-user"}
        assert len(cat.gallery(tag="survey1")) == 3


# --- the real model ---------------------------------------------------------------------------------------------
def _real_photos(samples, n: int) -> list[tuple[str, bytes]]:
    """The real sample photos of tests/data."""
    return [(Path(p).name, Path(p).read_bytes()) for p in samples["path"].tolist()[:n]]


@pytest.fixture
def real_identifier(identifier):
    """conftest's session ``identifier`` (the bundled model); its gallery is restored afterwards."""
    original = identifier.gallery
    yield identifier
    identifier.set_gallery(original)


def test_real_identifier_enrol_search_identify(real_identifier, samples, tmp_path: Path) -> None:
    identifier = real_identifier
    photos = _real_photos(samples, 6)
    species = identifier.species_names[0]
    users = ("user-0", "user-1", "user-2")
    with Catalog(tmp_path / "real.sqlite3", identifier.gallery, model_version=identifier.model_version) as cat:
        files = {f"{users[i % 3]}/{i}-{name}": data for i, (name, data) in enumerate(photos)}
        report = enrol_zip(cat, identifier, make_zip(tmp_path / "r.zip", files), species=species, tags="test")
        assert report.count("added") == len(photos)
        gallery = cat.gallery()
        assert gallery.model_version == identifier.model_version and gallery.stale == 0
        user = np.isin(gallery.individual_ids, users)
        assert user.sum() == len(photos) and len(gallery) == len(identifier.gallery) + len(photos)
        # against the user's photos only, each photo's best match is its own individual
        identifier.set_gallery(cat.gallery(tag="test"))
        for i, (_, data) in enumerate(photos[:3]):
            assert identifier.identify(data).top5[0].individual_id == users[i % 3]
        # on the full layered gallery, Identifier scores and Catalog.search equal brute force
        identifier.set_gallery(gallery)
        query = identifier.identify(photos[0][1]).embedding
        brute = {u: float((gallery.embeddings[gallery.individual_ids == u] @ query).max()) for u in users}
        scores = dict(
            zip(
                gallery.individuals.tolist(),
                rules.individual_scores(
                    gallery, identifier.scores(ModelOutput(query, np.zeros(1)), gallery), identifier.config
                ).tolist(),
                strict=True,
            )
        )
        found = dict(_top_individuals(gallery, query, len(gallery.individuals)))
        for name, value in brute.items():
            assert scores[name] == pytest.approx(value, abs=1e-5)
            assert found[name] == pytest.approx(value, abs=1e-5)
        # re-embedding the stored crops with the same model reproduces the stored embeddings
        stored = gallery.embeddings[user].copy()
        with cat.transaction() as conn:
            conn.execute("UPDATE images SET model_version = 'old'")
        assert cat.stale_count() == len(photos) and cat.gallery().stale == len(photos)
        assert cat.reembed(identifier) == len(photos)
        np.testing.assert_allclose(cat.gallery().embeddings[user], stored, atol=1e-5)
