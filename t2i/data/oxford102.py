"""Oxford-102 flowers in the layout of Reed et al. 2016 (the captions of StackGAN/AttnGAN).

    <root>/jpg/image_00001.jpg                       Oxford's 102flowers.tgz
    <root>/text_c10/class_00001/image_00001.txt     ten captions per image, one per line
    <root>/trainvalclasses.txt, <root>/testclasses.txt   class names, one per line

Train and test are class-disjoint, as in the literature: an image's split is its class's split.
"""

from __future__ import annotations

from pathlib import Path

from t2i.config import IngestParams
from t2i.data.assemble import Item, assemble, require
from t2i.data.readers import Dataset, IngestError
from t2i.data.textio import read_caption_lines

HINT = ("put the dataset in data/raw/oxford102 (or set ingest.root): jpg/ from Oxford's "
        "102flowers.tgz, text_c10/ and the class split files from Reed et al.'s cvpr2016_flowers")


def _class_name(line: str) -> str:
    """``class_00001`` from either ``class_00001`` or ``1``."""
    name = line.strip()
    return f"class_{int(name):05d}" if name.isdigit() else name


def read_classes(path: Path) -> set[str]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return {_class_name(line) for line in lines if line.strip()}


def read(params: IngestParams) -> Dataset:
    root = params.dataset_root()
    require(root, "the Oxford-102 dataset folder", HINT)
    jpg = require(root / "jpg", "the image folder jpg/", HINT)
    text = require(root / "text_c10", "the caption folder text_c10/", HINT)
    train = read_classes(require(root / "trainvalclasses.txt", "the split file trainvalclasses.txt", HINT))
    test = read_classes(require(root / "testclasses.txt", "the split file testclasses.txt", HINT))
    if train & test:
        raise IngestError(f"classes in both split files: {sorted(train & test)[:5]}")
    items: list[Item] = []
    for class_dir in sorted(p for p in text.iterdir() if p.is_dir()):
        split = "train" if class_dir.name in train else "test" if class_dir.name in test else None
        if split is None:
            continue  # a class in neither split file is not part of the benchmark
        for txt in sorted(class_dir.glob("*.txt")):
            rel = txt.relative_to(root).as_posix()
            captions, skips, considered = read_caption_lines(txt, rel)
            image = jpg / f"{txt.stem}.jpg"
            items.append(Item(path=image, name=image.relative_to(root).as_posix(), captions=captions,
                              split=split, cls=class_dir.name, caption_skips=skips,
                              captions_considered=considered))
    if not items:
        raise IngestError(f"no caption files text_c10/class_*/image_*.txt under {root}; {HINT}")
    return assemble(items, params, root)
