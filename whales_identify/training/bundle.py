"""Turn a trained checkpoint into the shipped model: tuned rules, catalogue, samples.

``python -m whales_identify bundle`` embeds every labelled photo once, tunes
the decision rules on the validation split (gallery = training split), picks a
few held-out sample photos for the tests and the app, and writes the bundled
catalogue of everything else with one thumbnail per individual.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from whales_identify.config import NEW_INDIVIDUAL, NON_CETACEAN, CatalogConfig, InferenceConfig
from whales_identify.errors import WhaleIdError
from whales_identify.inputs.imaging import decode_image, encode_jpeg
from whales_identify.matching.gallery import Gallery
from whales_identify.matching.identifier import Identifier, ModelOutput
from whales_identify.model.checkpoint import load_checkpoint, network_info
from whales_identify.model.engines import onnx_path_for
from whales_identify.model.torch_engine import export_onnx
from whales_identify.training.catalogue_check import refuse_placeholders
from whales_identify.training.data import load_dataset
from whales_identify.training.evaluate import embed_files, gallery_of_rows
from whales_identify.training.protocol import open_set, protocol_summary
from whales_identify.training.tune import tune

log = logging.getLogger(__name__)
SAMPLE_LONG_SIDE = 480
SAMPLE_QUALITY = 88
THUMBNAIL = CatalogConfig()  # the bundled catalogue's thumbnails are made like the user's
SAMPLE_MARGIN = 0.05  # a sample's best score stays this far from the new-individual threshold


@dataclass
class BundlePaths:
    checkpoint: Path
    data_root: Path
    models_dir: Path
    samples_dir: Path
    keep_samples: bool = False  # keep the samples already listed in samples_dir/samples.csv that still do their job


def _pick_samples(
    identifier: Identifier,
    frame: pd.DataFrame,
    outputs: list,
    gallery_all: Gallery,
    keep: pd.DataFrame | None = None,
) -> list[int]:
    """Held-out photos the tests can check: a few known animals, a new one, a negative.

    Each is judged leave-one-out against the full catalogue (its own row removed),
    exactly as it will be once it is left out of the bundle. With ``keep`` (a samples.csv), each listed
    photo that still does its job is kept, in place, and only the others are replaced by the next photo of
    their kind, so a re-bundle moves as few of the tests' samples as it must.
    """
    rng = np.random.default_rng(0)
    counts = frame["individual_id"].value_counts()
    chosen: list[int] = []

    def answer_without(index: int, drop_individual: bool = False):
        """The answer for the photo exactly as it will be shipped (resized, re-encoded)."""
        if not isinstance(outputs[index], ModelOutput):
            return None
        mask = gallery_all.image_names != frame.at[index, "image"]
        if drop_individual:
            mask &= gallery_all.individual_ids != frame.at[index, "individual_id"]
        output = identifier.forward([decode_image(_sample_bytes(frame.at[index, "path"]))])[0]
        result = identifier.decide(output, gallery_all.subset(mask))
        best = result.best.score if result.best else -1.0
        threshold = result.new_individual_threshold
        # far from the threshold that decided it: stable across platforms
        clear = threshold is None or abs(best - threshold) >= SAMPLE_MARGIN
        return result if clear else None

    def known_holds(index: int) -> bool:
        result = answer_without(index)
        return bool(result and result.answer == frame.at[index, "individual_id"] and not result.rejected)

    def new_holds(index: int) -> bool:
        result = answer_without(index, True)
        return bool(result and result.answer == NEW_INDIVIDUAL)

    reject = identifier.config.reject_threshold

    def negative_holds(index: int) -> bool:
        result = answer_without(index)
        return bool(result and result.rejected and result.species_probability > min(0.95, reject + 0.3))

    # One random order per pool, drawn in a fixed sequence, so the same model always picks the same photos.
    wanted = [
        ("noaa_right_whale", 3),
        ("bottlenose_fins_naukma", 1),
        ("fin_whale_catrlog", 1),
        ("kabuga_individual_id", 1),
    ]
    named = frame["individual_id"].ne("") & ~frame["individual_id"].str.startswith("unknown")
    test = frame[(frame["split"] == "test") & named]
    orders = {source: rng.permutation(np.array(test[test["source"] == source].index)) for source, _ in wanted}
    singletons = frame[named & frame["individual_id"].map(counts).eq(1) & frame["source"].ne("noaa_right_whale")]
    orders[NEW_INDIVIDUAL] = rng.permutation(np.array(singletons.index))
    negatives = frame[(frame["split"] == "test") & frame["species"].eq(NON_CETACEAN)]
    orders[NON_CETACEAN] = rng.permutation(np.array(negatives.index))

    def pick(pool: str) -> int | None:
        """The first photo of ``pool``'s order, not yet chosen, that does its job."""
        for index in orders[pool]:
            if int(index) in chosen:
                continue
            if pool == NEW_INDIVIDUAL:
                holds = new_holds(index)
            elif pool == NON_CETACEAN:
                holds = negative_holds(index)
            else:
                holds = counts[frame.at[index, "individual_id"]] >= 3 and known_holds(index)
            if holds:
                return int(index)
        return None

    if keep is not None:
        chosen, failed = _kept_samples(frame, keep, counts, known_holds, new_holds, negative_holds)
        for position, pool in failed:  # a sample that no longer does its job: the next one of its kind
            if pool not in orders:
                raise WhaleIdError(
                    f"sample {keep.iloc[position]['image']} no longer does its job, and its source "
                    "is not one samples are drawn from: bundle without --keep-samples"
                )
            replacement = pick(pool)
            if replacement is None:
                raise WhaleIdError(f"no photo can replace sample {keep.iloc[position]['image']}")
            log.info("sample %s replaced by %s", keep.iloc[position]["image"], frame.at[replacement, "image"])
            chosen[position] = replacement
        return chosen

    for source, n in wanted:
        for _ in range(n):
            found = pick(source)
            if found is None:
                break
            chosen.append(found)
    for pool in (NEW_INDIVIDUAL, NON_CETACEAN):
        found = pick(pool)
        if found is not None:
            chosen.append(found)
    return chosen


def _kept_samples(
    frame: pd.DataFrame,
    keep: pd.DataFrame,
    counts: pd.Series,
    known_holds: Callable[[int], bool],
    new_holds: Callable[[int], bool],
    negative_holds: Callable[[int], bool],
) -> tuple[list[int], list[tuple[int, str]]]:
    """The rows of the samples listed in ``keep``, each checked for its role with the new model (a negative
    is rejected, an animal with one photo is a new individual, any other is answered by name), and the
    (position, pool) of each that no longer does its job: its pool is its source, ``new_individual`` or
    ``non_cetacean``."""
    by_image = {image: index for index, image in zip(frame.index, frame["image"], strict=True)}
    chosen: list[int] = []
    failed: list[tuple[int, str]] = []
    for position, sample in enumerate(keep.itertuples()):
        index = by_image.get(str(sample.original))
        if index is None:
            raise WhaleIdError(f"sample {sample.image}: its photo {sample.original} is not in the data")
        if frame.at[index, "species"] == NON_CETACEAN:
            pool, holds = NON_CETACEAN, negative_holds(index)
        elif counts.get(frame.at[index, "individual_id"], 0) == 1:
            pool, holds = NEW_INDIVIDUAL, new_holds(index)
        else:
            pool, holds = str(frame.at[index, "source"]), known_holds(index)
        chosen.append(int(index))
        if not holds:
            failed.append((position, pool))
    return chosen, failed


def _sample_bytes(path: str) -> bytes:
    """A sample photo as shipped: at most SAMPLE_LONG_SIDE px, JPEG."""
    return encode_jpeg(decode_image(path), SAMPLE_LONG_SIDE, SAMPLE_QUALITY)


def _write_samples(frame: pd.DataFrame, chosen: list[int], samples_dir: Path) -> None:
    samples_dir.mkdir(parents=True, exist_ok=True)
    for old in samples_dir.glob("*.jpg"):
        old.unlink()
    rows = []
    for index in chosen:
        row = frame.loc[index]
        name = f"{row['species']}_{Path(row['image']).stem}.jpg"
        (samples_dir / name).write_bytes(_sample_bytes(row["path"]))
        rows.append(
            {
                "image": name,
                "individual_id": row["individual_id"],
                "species": row["species"],
                "source": row["source"],
                "licence": row["licence"],
                "original": row["image"],
            }
        )
    pd.DataFrame(rows).to_csv(samples_dir / "samples.csv", index=False)


def bundle(paths: BundlePaths, seed: int | None = None) -> dict:
    """Write models/{whale_id.pt, inference.yaml, catalogue.npz, species_map.yaml} and the samples."""
    identifier = Identifier.load(paths.checkpoint, catalogue=None, inference_config=InferenceConfig())
    train_config = identifier.network.meta.get("train_config", {})
    seed = seed if seed is not None else int(train_config["seed"])
    # The split the network was trained with (checkpoints before the by-individual split: by photo).
    frame = load_dataset(paths.data_root, seed, str(train_config.get("split", "photo")))
    log.info("embedding %d photos", len(frame))
    outputs = embed_files(identifier, [Path(p) for p in frame["path"]])
    ok = np.array([isinstance(o, ModelOutput) for o in outputs])
    for bad in np.flatnonzero(~ok):  # unreadable, or nothing in it: never in the catalogue
        log.warning("left out %s: %s", frame.at[bad, "image"], outputs[bad])

    def gallery_of(mask: np.ndarray) -> Gallery:
        return gallery_of_rows(frame, outputs, np.flatnonzero(mask))

    # Tuned as it will be used: a catalogue of trained and never-trained animals, photos of both kinds.
    protocol = open_set(frame, "val", seed)
    tune_gallery = gallery_of(np.isin(np.arange(len(frame)), protocol.gallery))
    val = np.asarray([i for i in protocol.queries if ok[i]], dtype=int)
    tuned, val_scores = tune(
        InferenceConfig(),
        tune_gallery,
        [identifier.scores(o, tune_gallery) for o in (outputs[i] for i in val) if isinstance(o, ModelOutput)],
        identifier.species_names,
        frame["individual_id"].to_numpy()[val].tolist(),
        frame["species"].to_numpy()[val].tolist(),
    )
    tuned = replace(
        tuned,
        tuned_on=f"validation individuals (seed {seed}, {protocol_summary(frame, protocol)}); "
        "catalogue = training photos + half of the validation individuals' photos",
    )
    identifier.config = tuned
    log.info("tuned %s; validation %s", tuned, val_scores)

    full = gallery_of(np.ones(len(frame), bool))
    listed = paths.samples_dir / "samples.csv"
    kept = pd.read_csv(listed, dtype=str, keep_default_na=False) if paths.keep_samples else None
    chosen = _pick_samples(identifier, frame, outputs, full, kept)
    _write_samples(frame, chosen, paths.samples_dir)
    keep = np.ones(len(frame), bool)
    keep[chosen] = False
    # A sample of a new individual must leave no photo of that animal behind.
    for index in chosen:
        individual = frame.at[index, "individual_id"]
        if individual and (frame["individual_id"] == individual).sum() == 1:
            keep &= (frame["individual_id"] != individual).to_numpy()
    catalogue = gallery_of(keep)
    refuse_placeholders(catalogue.individuals, "the bundled catalogue")
    thumbs: dict[str, bytes] = {}
    for row in np.flatnonzero(keep & ok):
        index = int(row)
        individual = frame.at[index, "individual_id"]
        if individual and individual not in thumbs:
            thumbs[individual] = encode_jpeg(
                decode_image(frame.at[index, "path"]),
                THUMBNAIL.thumbnail_size,
                THUMBNAIL.thumbnail_quality,
                optimize=True,
            )
    catalogue.thumbnails = thumbs

    models_dir = paths.models_dir
    models_dir.mkdir(parents=True, exist_ok=True)
    target = models_dir / "whale_id.pt"
    if paths.checkpoint.resolve() != target.resolve():
        shutil.copyfile(paths.checkpoint, target)
    model, meta = load_checkpoint(target)
    catalogue.model_version = meta["model_version"]
    export_onnx(model, onnx_path_for(target), network_info(model, meta))  # the fast path, same network
    catalogue.save(models_dir / "catalogue.npz")
    tuned.save(models_dir / "inference.yaml")
    species_map = {str(k): str(v) for k, v in sorted(catalogue.individual_species.items())}
    (models_dir / "species_map.yaml").write_text(
        "# individual_id: species, for every individual in the bundled catalogue\n"
        + yaml.safe_dump(species_map, sort_keys=False)
    )
    return {
        "validation": val_scores,
        "inference_config": tuned.__dict__,
        "samples": len(chosen),
        "catalogue_images": len(catalogue),
        "catalogue_individuals": len(catalogue.individuals),
    }
