"""The user's own catalogue: a SQLite store layered over the bundled one, enrolment, export and import."""

from whales_identify.catalog.enrol import EnrolmentError, enrol_photo, enrol_zip
from whales_identify.catalog.exchange import CatalogImportError, export_catalog, import_catalog
from whales_identify.catalog.store import Catalog, CatalogError, default_path

__all__ = [
    "Catalog",
    "CatalogError",
    "CatalogImportError",
    "EnrolmentError",
    "default_path",
    "enrol_photo",
    "enrol_zip",
    "export_catalog",
    "import_catalog",
]
