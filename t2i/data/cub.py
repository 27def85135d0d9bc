"""CUB-200-2011 birds with the per-image captions of Reed et al. 2016.

    <root>/images.txt            "<id> <class>/<name>.jpg"
    <root>/train_test_split.txt  "<id> <1 = train | 0 = test>"  (the standard split)
    <root>/bounding_boxes.txt    "<id> <x> <y> <width> <height>"
    <root>/images/<class>/<name>.jpg
    <root>/text/<class>/<name>.txt   captions, one per line (``text_c10/`` is accepted too)

The metadata may also sit in ``<root>/CUB_200_2011/`` with ``text/`` beside it (the StackGAN and
AttnGAN "birds" layout). With ``ingest.cub_crop`` each bird is cropped to a square 1.5x its box.
"""

from __future__ import annotations

from pathlib import Path

from t2i.config import IngestParams
from t2i.data.assemble import Item, assemble, require
from t2i.data.imageio import Box
from t2i.data.readers import Dataset, IngestError
from t2i.data.textio import Skip, read_caption_lines, skip

HINT = "put CUB_200_2011 and its text/ captions in data/raw/cub (or set ingest.root)"


def _table(path: Path) -> dict[str, list[str]]:
    """``id -> remaining fields`` of a whitespace-separated CUB metadata file."""
    rows = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        fields = line.split()
        if len(fields) < 2:
            if fields:
                raise IngestError(f"{path}:{number}: expected '<id> <value...>', got {line!r}")
            continue
        rows[fields[0]] = fields[1:]
    return rows


def _text_dir(root: Path, base: Path) -> Path:
    for candidate in (base / "text", root / "text", base / "text_c10", root / "text_c10"):
        if candidate.is_dir():
            return candidate
    raise IngestError(f"expected the caption folder text/ at {root / 'text'}, not found; {HINT}")


def read(params: IngestParams) -> Dataset:
    root = require(params.dataset_root(), "the CUB dataset folder", HINT)
    base = root / "CUB_200_2011" if (root / "CUB_200_2011" / "images.txt").is_file() else root
    images = _table(require(base / "images.txt", "images.txt", HINT))
    is_train = _table(require(base / "train_test_split.txt", "train_test_split.txt", HINT))
    boxes = _table(require(base / "bounding_boxes.txt", "bounding_boxes.txt", HINT)) if params.cub_crop else {}
    image_dir = require(base / "images", "the image folder images/", HINT)
    text = _text_dir(root, base)
    items: list[Item] = []
    missing: list[Skip] = []
    for image_id, (rel, *_) in images.items():
        if image_id not in is_train:
            raise IngestError(f"image id {image_id} ({rel}) is not in {base / 'train_test_split.txt'}")
        box: Box | None = None
        if params.cub_crop:
            if image_id not in boxes:
                raise IngestError(f"image id {image_id} ({rel}) has no box in {base / 'bounding_boxes.txt'}")
            x, y, w, h = map(float, boxes[image_id][:4])
            box = (x, y, w, h)
        txt = text / Path(rel).with_suffix(".txt")
        name = (image_dir / rel).relative_to(root).as_posix()
        if not txt.is_file():
            missing.append(skip(txt.relative_to(root).as_posix(), "caption file not found"))
            continue
        captions, skips, considered = read_caption_lines(txt, txt.relative_to(root).as_posix())
        items.append(Item(path=image_dir / rel, name=name, captions=captions,
                          split="train" if is_train[image_id][0] == "1" else "test",
                          cls=Path(rel).parent.name, box=box, caption_skips=skips,
                          captions_considered=considered))
    dataset = assemble(items, params, root, extra_skips=missing)
    if params.cub_crop:
        dataset.manifest["crop"] = "bounding box, square 1.5x the longer side"
    return dataset
