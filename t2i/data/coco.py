"""MS-COCO 2014 captions: train2014 -> ``train``, val2014 -> ``test`` (the AttnGAN convention).

    <root>/annotations/captions_train2014.json   {"images": [{id, file_name}], "annotations": [{image_id, caption}]}
    <root>/annotations/captions_val2014.json
    <root>/train2014/<file_name>, <root>/val2014/<file_name>

COCO has no classes; ``class`` is empty.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from t2i.config import IngestParams
from t2i.data.assemble import Item, assemble, require
from t2i.data.readers import Dataset, IngestError
from t2i.data.textio import Skip, clean_caption

HINT = "put annotations/, train2014/ and val2014/ in data/raw/coco (or set ingest.root)"
PARTS = {"train": "train2014", "test": "val2014"}


def _load_json(path: Path) -> dict:
    # Undecodable bytes survive as surrogates, so one bad caption is skipped, not the file.
    text = path.read_bytes().decode("utf-8", errors="surrogateescape")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise IngestError(f"{path} is not valid JSON: {exc}") from None


def read(params: IngestParams) -> Dataset:
    root = require(params.dataset_root(), "the COCO dataset folder", HINT)
    items: list[Item] = []
    for split, part in PARTS.items():
        ann_file = require(root / "annotations" / f"captions_{part}.json", f"captions_{part}.json", HINT)
        folder = require(root / part, f"the image folder {part}/", HINT)
        data = _load_json(ann_file)
        try:
            files = {img["id"]: img["file_name"] for img in data["images"]}
            pairs = [(a["image_id"], a.get("caption"), a.get("id")) for a in data["annotations"]]
        except (KeyError, TypeError) as exc:
            raise IngestError(f"{ann_file}: not COCO captions format (missing {exc})") from None
        captions: dict[int, list[str]] = defaultdict(list)
        skips: dict[int, list[Skip]] = defaultdict(list)
        considered: dict[int, int] = defaultdict(int)
        for image_id, caption, ann_id in pairs:
            considered[image_id] += 1
            text, bad = clean_caption(caption, f"{ann_file.relative_to(root).as_posix()}#annotation={ann_id}")
            if bad:
                skips[image_id].append(bad)
            else:
                captions[image_id].append(text)
        unknown = set(considered) - set(files)
        if unknown:
            raise IngestError(f"{ann_file}: captions refer to unknown image ids {sorted(unknown)[:5]}")
        for image_id, file_name in sorted(files.items()):
            items.append(Item(path=folder / file_name, name=f"{part}/{file_name}", captions=captions[image_id],
                              split=split, caption_skips=skips[image_id],
                              captions_considered=considered[image_id]))
    return assemble(items, params, root)
