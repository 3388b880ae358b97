"""Catalogue search and the decision rules: an embedding → species, top-5 individuals, new, or rejected."""

from whales_identify.matching.gallery import Gallery
from whales_identify.matching.identifier import Identifier, ModelOutput
from whales_identify.matching.results import Candidate, Identification
from whales_identify.matching.rules import QueryScores, decide

__all__ = ["Candidate", "Gallery", "Identification", "Identifier", "ModelOutput", "QueryScores", "decide"]
