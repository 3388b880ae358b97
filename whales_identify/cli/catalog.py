"""``catalog`` sub-commands: list, add, import, export, remove, stats.

The model is loaded only by ``add`` (the others touch the database alone), so
listing or exporting is instant even on a slow machine.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from whales_identify.catalog.store import Catalog, CatalogError
from whales_identify.cli.options import add_model_options
from whales_identify.config import DEFAULT_CATALOGUE
from whales_identify.inputs.text import csv_safe
from whales_identify.services import load_services, open_catalog


def _open(args: argparse.Namespace) -> Catalog:
    return open_catalog(args.db, DEFAULT_CATALOGUE, actor=args.actor)


def _cmd_list(args: argparse.Namespace) -> int:
    with _open(args) as catalog:
        frame = catalog.individuals(include_bundled=args.all)
    if args.species:
        frame = frame[frame["species"] == args.species]
    if frame.empty and not args.csv:
        print("no individuals yet" + ("" if args.all else " (--all includes the bundled catalogue)"))
    else:
        print(frame.map(csv_safe).to_csv(index=False) if args.csv else frame.to_string(index=False))
    return 0


def _cmd_add(args: argparse.Namespace) -> int:
    from whales_identify.catalog.enrol import enrol_photo, enrol_zip

    services = load_services(
        args.checkpoint, args.catalogue, args.inference_config, db=args.db, user_catalog="open", actor=args.actor
    )
    identifier, catalog = services.identifier, services.catalog
    assert catalog is not None  # "open" raises rather than leave it out
    path = Path(args.path)
    with catalog:
        if path.is_dir() or path.suffix.lower() == ".zip":
            report = enrol_zip(catalog, identifier, path, args.actor, species=args.species, tags=args.tags)
            print(report.to_frame().to_string(index=False))
            print(report.summary())
            return 0
        if not args.id:
            raise CatalogError("adding one photo needs --id (and --new for a new individual)")
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise CatalogError(f"cannot read {path}: {exc.strerror or exc}") from exc
        row = enrol_photo(
            catalog, identifier, data, args.id, args.species, path.name, args.actor, new=args.new, tags=args.tags
        )
    print(f"{row.file}: {row.status} ({row.message}) → {row.individual_id}, image {row.image_id}")
    return 0


def _cmd_import(args: argparse.Namespace) -> int:
    from whales_identify.catalog.exchange import import_catalog

    with _open(args) as catalog:
        summary = import_catalog(catalog, args.file, args.actor)
    print(
        f"imported {summary.images_added} photos, {summary.individuals_created} new individuals; "
        f"{summary.duplicates} photos were already here"
    )
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from whales_identify.catalog.exchange import export_catalog

    with _open(args) as catalog:
        manifest = export_catalog(catalog, args.file)
    counts = manifest["counts"]
    print(f"exported {counts['individuals']} individuals, {counts['images']} photos to {args.file}")
    return 0


def _cmd_remove(args: argparse.Namespace) -> int:
    with _open(args) as catalog:
        if args.image is not None:
            catalog.remove_image(args.image, args.actor)
            print(f"removed image {args.image}")
        elif args.id:
            n = catalog.remove_individual(args.id, args.actor)
            print(f"removed {args.id} and its {n} photos")
        else:
            raise CatalogError("say what to remove: an individual id, or --image IMAGE_ID")
    return 0


def _cmd_stats(args: argparse.Namespace) -> int:
    with _open(args) as catalog:
        stats = catalog.stats()
    print(json.dumps(stats, indent=2))
    return 0


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``catalog`` and its sub-commands to the main parser's sub-parsers."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--db",
        type=Path,
        default=None,
        help="catalogue database (default: $WHALE_ID_HOME/catalog.sqlite3, else ~/.local/share/whales_identify/...)",
    )
    common.add_argument("--actor", default=None, help="name recorded in the audit log (default: your login)")

    parser = subparsers.add_parser("catalog", help="your own catalogue of individuals (SQLite)")
    sub = parser.add_subparsers(dest="catalog_command", required=True)

    p = sub.add_parser("list", parents=[common], help="list individuals")
    p.add_argument("--species", default=None)
    p.add_argument("--all", action="store_true", help="include the bundled catalogue's individuals")
    p.add_argument("--csv", action="store_true", help="print CSV")
    p.set_defaults(func=_cmd_list)

    p = sub.add_parser("add", parents=[common], help="add a photo (--id, --new) or a ZIP/folder of photos")
    p.add_argument("path", help="a photo, or a ZIP/folder: CSV image,individual_id,species or one folder per id")
    p.add_argument("--id", default=None, help="individual id for a single photo")
    p.add_argument("--species", default=None, help="species of a new individual (or of every folder in a ZIP)")
    p.add_argument("--new", action="store_true", help="the id is a new individual (else: confirm an existing one)")
    p.add_argument("--tags", default="", help="comma-separated tags for the photos (e.g. survey name)")
    add_model_options(p)
    p.set_defaults(func=_cmd_add)

    p = sub.add_parser("import", parents=[common], help="import a catalogue export ZIP")
    p.add_argument("file", type=Path)
    p.set_defaults(func=_cmd_import)

    p = sub.add_parser("export", parents=[common], help="export your catalogue to one portable ZIP")
    p.add_argument("file", type=Path)
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("remove", parents=[common], help="remove an individual (with its photos) or one photo")
    p.add_argument("id", nargs="?", default=None)
    p.add_argument("--image", type=int, default=None, help="remove only this image id")
    p.set_defaults(func=_cmd_remove)

    p = sub.add_parser("stats", parents=[common], help="counts per species, stale embeddings")
    p.set_defaults(func=_cmd_stats)
    return parser
