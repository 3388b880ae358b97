"""A reviewed batch into the catalogue: the photos a reviewer confirmed or corrected, and one
review row per verdict, in ONE transaction.

A reviewer steps through a batch's answers and gives each photo a verdict on the model's answer
(``REVIEW_DECISIONS``: Same, Different, Cannot tell). ``save_reviewed`` turns those verdicts into:

* a stored photo for every verdict that names an individual (``ReviewDecision.individual_id``):
  "Same" on a known answer confirms that individual; "Different" with a correction stores the photo
  under the corrected individual (another candidate, an id typed in, or a new individual with its
  species); "Same" on a *new individual* answer creates the new individual the reviewer named;
* one ``Review`` row per verdict (the photo's SHA-256, the individual the verdict is about, the
  decision, and the model's answer, probability and correction in its details);
* an audit-log row per stored photo (``Catalog.add_images`` writes it).

Everything slow (decoding, cropping, the forward pass) happens first, with the enrolment's own
helpers (``catalog/enrol.py``); then ``Catalog.add_images`` writes photos and verdicts together:
a verdict that cannot be saved stores nothing at all (``ReviewSaveError`` says which and why).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from whales_identify.catalog.enrol import (
    PreparedPhoto,
    accepted_species,
    checked_new_id,
    embed_crops,
    new_image,
    prepare_photo,
)
from whales_identify.catalog.store import (
    REVIEW_DECISIONS,
    Catalog,
    CatalogError,
    Embedder,
    Review,
    checked_species,
)
from whales_identify.config import NEW_INDIVIDUAL
from whales_identify.errors import WhaleIdError

SAME, DIFFERENT, CANNOT_TELL = REVIEW_DECISIONS


@dataclass(frozen=True)
class ReviewDecision:
    """A reviewer's verdict on one photo of a batch.

    ``answer`` is the model's answer (an individual id or ``NEW_INDIVIDUAL``); ``individual_id`` is
    who the photo is, as the reviewer says ("" when the photo is not to be stored: Cannot tell, or
    Different without knowing who it is); ``new`` and ``species`` when that is a new individual.
    ``about`` is the individual the verdict is recorded against (default: the answer when it is a
    catalogue individual, else ``individual_id``; for a new-individual answer that stores nothing,
    pass the closest candidate)."""

    file: str
    sha256: str  # of the photo's bytes as uploaded (the catalogue finds repeats by it)
    decision: str  # "same", "different" or "cannot_tell"
    answer: str
    individual_id: str = ""
    new: bool = False
    species: str = ""
    about: str = ""
    probability: float | None = None  # the answer's probability
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def stores_photo(self) -> bool:
        return bool(self.individual_id)

    @property
    def subject(self) -> str:
        """The individual the review row is about."""
        if self.about:
            return self.about
        return self.answer if self.answer != NEW_INDIVIDUAL else self.individual_id


@dataclass
class SavedPhoto:
    file: str
    individual_id: str
    image_id: int | None  # None: the same photo was already in the catalogue (its verdict is still recorded)
    new: bool = False


@dataclass
class SaveReport:
    """What ``save_reviewed`` wrote: the photos stored (or found already stored) and the review rows."""

    photos: list[SavedPhoto] = field(default_factory=list)
    reviews: int = 0

    @property
    def stored(self) -> list[SavedPhoto]:
        return [p for p in self.photos if p.image_id is not None]

    @property
    def already_there(self) -> list[SavedPhoto]:
        return [p for p in self.photos if p.image_id is None]

    @property
    def new_individuals(self) -> list[str]:
        return sorted({p.individual_id for p in self.stored if p.new})

    def summary(self) -> str:
        def count(n: int, word: str) -> str:
            return f"{n} {word}" + ("" if n == 1 else "s")

        parts = [count(len(self.stored), "photo") + " stored"]
        if self.new_individuals:
            parts.append(count(len(self.new_individuals), "new individual"))
        if self.already_there:
            parts.append(f"{len(self.already_there)} already in the catalogue")
        parts.append(count(self.reviews, "review") + " recorded")
        return ", ".join(parts)


class ReviewSaveError(CatalogError):
    """Nothing was saved. ``problems`` lists (file, why) for each verdict that stopped it."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        listing = "; ".join(f"{file}: {why}" for file, why in problems[:10])
        more = f" (and {len(problems) - 10} more)" if len(problems) > 10 else ""
        super().__init__(f"nothing was saved: {listing}{more}")
        self.problems = problems


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def check_decisions(
    catalog: Catalog, identifier: Embedder, decisions: Sequence[ReviewDecision]
) -> list[tuple[str, str]]:
    """Every reason these verdicts cannot be saved, as (file, why); empty when they can.

    New individuals may be named once each (further photos of the same animal confirm it); a verdict
    must agree with the answer it judges (Same keeps the answer, Different changes it, Cannot tell
    stores nothing); ids and species follow the catalogue's rules."""
    problems: list[tuple[str, str]] = []
    species_ok = accepted_species(catalog, identifier)
    created: dict[str, str] = {}  # new individuals of this review -> species
    seen: set[str] = set()
    for d in decisions:
        if d.file in seen:
            problems.append((d.file, "reviewed twice"))
            continue
        seen.add(d.file)
        if d.decision not in REVIEW_DECISIONS:
            problems.append((d.file, f"a verdict is one of {', '.join(REVIEW_DECISIONS)}, not {d.decision!r}"))
            continue
        if d.new:
            if not d.individual_id:
                problems.append((d.file, "a new individual needs an id"))
                continue
            try:
                checked_new_id(catalog, d.individual_id)
                checked_species(d.species, species_ok)
            except CatalogError as exc:
                problems.append((d.file, str(exc)))
                continue
            if catalog.known(d.individual_id):
                problems.append((d.file, f"{d.individual_id} is already in the catalogue; choose it instead"))
                continue
            if d.individual_id in created:
                problems.append((d.file, f"{d.individual_id} is named as new twice; mark this photo as that id"))
                continue
            created[d.individual_id] = d.species
    for d in decisions:
        if d.decision not in REVIEW_DECISIONS or d.file not in seen:
            continue
        answer_known = d.answer != NEW_INDIVIDUAL
        if d.decision == CANNOT_TELL and d.stores_photo:
            problems.append((d.file, "Cannot tell stores no photo"))
        elif d.decision == SAME and answer_known and (d.new or d.individual_id != d.answer):
            problems.append((d.file, f"Same confirms {d.answer}; to choose another individual, use Different"))
        elif d.decision == SAME and not answer_known and not d.new:
            problems.append((d.file, "Same on a new-individual answer needs the new individual's id and species"))
        elif d.decision == DIFFERENT and not answer_known and d.new:
            problems.append((d.file, "Different from a new-individual answer names a catalogue individual"))
        elif d.decision == DIFFERENT and d.stores_photo and d.individual_id == d.answer:
            problems.append((d.file, f"Different from {d.answer} cannot store the photo as {d.answer}"))
        elif d.stores_photo and not d.new and not (catalog.known(d.individual_id) or d.individual_id in created):
            problems.append((d.file, f"no individual {d.individual_id!r} in the catalogue"))
        elif not d.subject:
            problems.append((d.file, "no catalogue individual to record this verdict against"))
        elif d.stores_photo and not d.new:
            species = catalog.species_of(d.individual_id) or created.get(d.individual_id, "")
            if d.species and species and d.species != species:
                problems.append((d.file, f"{d.individual_id} is a {species}, not a {d.species}"))
    return problems


def save_reviewed(
    catalog: Catalog,
    identifier: Embedder,
    decisions: Sequence[ReviewDecision],
    photos: Iterable[tuple[str, bytes | None]],
    actor: str | None = None,
) -> SaveReport:
    """Store the photos the verdicts name and one review row per verdict, in one transaction.

    ``photos`` yields (file, bytes) — e.g. the batch's uploads read again; only the files of verdicts
    that store a photo are kept (prepared as they stream past), each checked against its verdict's
    SHA-256. A verdict that is invalid, a photo missing, changed or unreadable: ``ReviewSaveError``
    and nothing is written. A photo already in the catalogue is not stored again (its verdict is)."""
    problems = check_decisions(catalog, identifier, decisions)
    if problems:
        raise ReviewSaveError(problems)
    wanted = {d.file: d for d in decisions if d.stores_photo}
    prepared: dict[str, PreparedPhoto] = {}
    for file, data in photos:
        d = wanted.get(file)
        if d is None or file in prepared or data is None:
            continue
        if _sha256(data) != d.sha256.lower():
            problems.append((file, "this file is not the photo that was reviewed (it changed since)"))
            continue
        try:
            prepared[file] = prepare_photo(catalog, identifier, file, data)
        except WhaleIdError as exc:
            problems.append((file, str(exc)))
    problems += [(file, "the photo is not among the files given") for file in wanted if file not in prepared]
    if problems:
        raise ReviewSaveError(problems)
    # New individuals first: a later photo of the same animal in this review then confirms it.
    storing = sorted((d for d in decisions if d.stores_photo), key=lambda d: not d.new)
    embeddings = list(embed_crops(catalog, identifier, [prepared[d.file].crop for d in storing]))
    created = {d.individual_id: d.species for d in storing if d.new}
    records = []
    for d, embedding in zip(storing, embeddings, strict=True):
        species = d.species if d.new else (catalog.species_of(d.individual_id) or created[d.individual_id])
        tags = "reviewed"
        records.append(
            new_image(prepared[d.file], embedding, d.individual_id, species, identifier.model_version, d.new, tags)
        )
    reviews = [_review(d, identifier.model_version) for d in decisions]
    ids = catalog.add_images(records, actor, reviews=reviews)
    report = SaveReport(reviews=len(reviews))
    for d, image_id in zip(storing, ids, strict=True):
        report.photos.append(SavedPhoto(d.file, d.individual_id, image_id, d.new))
    return report


def _review(d: ReviewDecision, model_version: str) -> Review:
    details: dict[str, Any] = {"answer": d.answer, "model_version": model_version, **d.details}
    if d.probability is not None:
        details["probability"] = round(float(d.probability), 4)
    if d.stores_photo:
        details["stored_as"] = d.individual_id
        if d.new:
            details["new_individual"] = True
    return Review(d.sha256.lower(), d.subject, d.decision, d.file, details)
