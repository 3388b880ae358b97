"""Does cropping to the animal (the rembg mask's box) before identifying help?

A/B on the Happywhale-style photos of the held-out test split (fins, flukes,
bodies in wide scenes; the right-whale photos are already head crops): the
same queries and gallery (training split, same sources), embedded once from
the whole photo and once from the crop to the mask's box.

    python benchmarks/bench_crop.py [--data-root ../shared/data]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
from pathlib import Path

from whales_identify.config import DEFAULT_DATA_ROOT
from whales_identify.inputs.imaging import decode_image
from whales_identify.matching.identifier import Identifier
from whales_identify.model.mask import Masker, crop_to_box
from whales_identify.training.data import load_dataset
from whales_identify.training.evaluate import QueryRecord, gallery_from_outputs, summarise
from whales_identify.training.metrics import ground_truth

METRICS = ("known_top1", "known_top5", "known_map5", "map5", "species_accuracy", "new_individual_recall")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", default=str(DEFAULT_DATA_ROOT))
    parser.add_argument("--out", default="benchmarks/results/crop.json")
    args = parser.parse_args()

    identifier = Identifier.load(catalogue=None)
    masker = Masker()
    frame = load_dataset(args.data_root, int(identifier.meta["train_config"]["seed"]))
    frame = frame[(frame["source"] != "noaa_right_whale") & frame["split"].isin(["train", "test"])]
    frame = frame.reset_index(drop=True)
    whole, cropped = [], []
    for path in frame["path"]:
        image = decode_image(path)
        box = masker.mask(image).box
        whole.append(identifier.forward([image])[0])
        cropped.append(identifier.forward([crop_to_box(image, box)])[0])

    results = {}
    for name, outputs in (("whole_photo", whole), ("crop_to_mask_box", cropped)):
        is_gallery = (frame["split"] == "train").to_numpy()
        rows = [i for i in range(len(frame)) if is_gallery[i]]
        gallery = gallery_from_outputs(
            [outputs[i] for i in rows],
            frame["individual_id"][rows].tolist(),
            frame["species"][rows].tolist(),
            frame["image"][rows].tolist(),
        )
        known = set(gallery.individuals.tolist())
        records = []
        for i in (i for i in range(len(frame)) if not is_gallery[i]):
            row = frame.iloc[i]
            result = identifier.decide(outputs[i], gallery)
            records.append(
                QueryRecord(
                    row["image"],
                    row["individual_id"],
                    row["species"],
                    ground_truth(row["individual_id"], known),
                    result.answer,
                    result.ranked_answers(),
                    result.species,
                    result.rejected,
                )
            )
        summary = summarise(records)
        results[name] = {k: summary.get(k) for k in ("n_queries", "n_known", *METRICS)}

    print(f"{'metric':<24}{'whole photo':>14}{'crop to mask':>14}")
    for metric in ("n_queries", "n_known", *METRICS):
        a, b = results["whole_photo"][metric], results["crop_to_mask_box"][metric]
        print(f"{metric:<24}{a if isinstance(a, int) else f'{a:.3f}':>14}{b if isinstance(b, int) else f'{b:.3f}':>14}")
    report = {
        "date": dt.date.today().isoformat(),
        "command": "python benchmarks/bench_crop.py",
        "gallery": "training split, non-right-whale sources",
        "queries": "test split, same sources",
        "results": results,
    }
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
