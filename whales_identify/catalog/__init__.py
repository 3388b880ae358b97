"""The user's own catalogue: a SQLite store layered over the bundled one, enrolment, reviewed batches,
comparison photos, export and import."""

from whales_identify.catalog.enrol import EnrolmentError, enrol_photo, enrol_zip
from whales_identify.catalog.exchange import CatalogImportError, export_catalog, import_catalog
from whales_identify.catalog.photos import ComparisonPhoto, ComparisonPhotos
from whales_identify.catalog.review import ReviewDecision, ReviewSaveError, SaveReport, save_reviewed
from whales_identify.catalog.store import REVIEW_DECISIONS, REVIEW_LABELS, Catalog, CatalogError, Review, default_path

__all__ = [
    "REVIEW_DECISIONS",
    "REVIEW_LABELS",
    "Catalog",
    "CatalogError",
    "CatalogImportError",
    "ComparisonPhoto",
    "ComparisonPhotos",
    "EnrolmentError",
    "Review",
    "ReviewDecision",
    "ReviewSaveError",
    "SaveReport",
    "default_path",
    "enrol_photo",
    "enrol_zip",
    "export_catalog",
    "import_catalog",
    "save_reviewed",
]
