"""Real-dataset readers on miniature copies of their real layouts, broken files included.

Each test builds its own dataset from a few generated JPEGs and caption files: a truncated JPEG,
a file that is not an image, an empty caption, invalid UTF-8 bytes and a non-ASCII caption that
must come through unchanged.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from t2i.config import IngestParams
from t2i.data import coco, cub, folder, oxford102
from t2i.data.readers import IngestError, get_reader

NON_ASCII = "une fleur rose très pâle — 花びらが白い"


def jpeg(path: Path, color: tuple[int, int, int] = (200, 40, 40), size: tuple[int, int] = (48, 40)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path, quality=90)
    return path


def truncated_jpeg(path: Path) -> Path:
    data = jpeg(path, size=(64, 64)).read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def not_an_image(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"this is not a JPEG\n")
    return path


def params(root: Path, dataset: str, **kw: object) -> IngestParams:
    return IngestParams(dataset=dataset, root=str(root), workers=1, **kw)


def skipped(ds: object) -> dict[str, str]:
    return {s["item"]: s["reason"] for s in ds.manifest["skipped"]}


# --- oxford102 -------------------------------------------------------------------------------


def oxford_layout(root: Path) -> None:
    classes = {1: [1, 2], 2: [3, 4], 3: [5, 6]}  # class -> image numbers
    for cls, numbers in classes.items():
        for n in numbers:
            jpeg(root / "jpg" / f"image_{n:05d}.jpg", (40 * n, 20, 200 - 30 * n))
            text = root / "text_c10" / f"class_{cls:05d}" / f"image_{n:05d}.txt"
            text.parent.mkdir(parents=True, exist_ok=True)
            text.write_text("".join(f"caption {k} of image {n}\n" for k in range(10)), encoding="utf-8")
    truncated_jpeg(root / "jpg" / "image_00004.jpg")
    not_an_image(root / "jpg" / "image_00005.jpg")
    (root / "text_c10" / "class_00001" / "image_00002.txt").write_bytes(
        b"a red flower\n\n" + b"bad bytes \xff\xfe here\n" + NON_ASCII.encode("utf-8") + b"\n"
    )
    (root / "trainvalclasses.txt").write_text("class_00001\nclass_00002\n", encoding="utf-8")
    (root / "testclasses.txt").write_text("3\n", encoding="utf-8")  # numbers are accepted too


def test_oxford102_reads_layout_and_skips_bad_items(tmp_path: Path) -> None:
    oxford_layout(tmp_path)
    ds = oxford102.read(params(tmp_path, "oxford102", max_bad_fraction=0.5))
    assert ds.images.shape == (4, 32, 32, 3) and ds.images.dtype == np.uint8
    bad = skipped(ds)
    assert set(bad) == {"jpg/image_00004.jpg", "jpg/image_00005.jpg",
                        "text_c10/class_00001/image_00002.txt:2", "text_c10/class_00001/image_00002.txt:3"}
    assert "truncated" in bad["jpg/image_00004.jpg"].lower()
    assert "cannot identify" in bad["jpg/image_00005.jpg"]
    assert bad["text_c10/class_00001/image_00002.txt:2"] == "empty caption"
    assert "UTF-8" in bad["text_c10/class_00001/image_00002.txt:3"]
    t = ds.table
    assert NON_ASCII in set(t["caption"])
    assert len(t) == 10 + 2 + 10 + 10  # images 1, 2 (2 good lines), 3, 6
    # Class-disjoint splits, as in the literature.
    assert set(t.loc[t["split"] == "train", "class"]) == {"class_00001", "class_00002"}
    assert set(t.loc[t["split"] == "test", "class"]) == {"class_00003"}
    # Image 3 is reddish-blue (120, 20, 110): the decoded pixels match its row.
    image3 = ds.images[t.loc[t["caption"] == "caption 0 of image 3", "image_index"].item()]
    assert np.abs(image3.reshape(-1, 3).mean(0) - [120, 20, 110]).max() < 12


def test_oxford102_too_many_bad_images_fails_with_count(tmp_path: Path) -> None:
    oxford_layout(tmp_path)
    with pytest.raises(IngestError, match=r"2 of 6 images are bad .*max_bad_fraction"):
        oxford102.read(params(tmp_path, "oxford102"))


def test_oxford102_missing_dataset_names_where_to_put_it(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(IngestError, match="data/raw/oxford102") as err:
        oxford102.read(params(missing, "oxford102"))
    assert str(missing) in str(err.value)
    oxford_layout(tmp_path)
    (tmp_path / "testclasses.txt").unlink()
    with pytest.raises(IngestError, match=r"testclasses\.txt at .*testclasses\.txt"):
        oxford102.read(params(tmp_path, "oxford102"))


def test_max_images_takes_a_seeded_subset(tmp_path: Path) -> None:
    oxford_layout(tmp_path)
    for n in (4, 5):  # only good images: the subset is about counts, not bad files
        (tmp_path / "jpg" / f"image_{n:05d}.jpg").unlink()
        jpeg(tmp_path / "jpg" / f"image_{n:05d}.jpg")
    a = oxford102.read(params(tmp_path, "oxford102", max_images=3, max_bad_fraction=0.5))
    b = oxford102.read(params(tmp_path, "oxford102", max_images=3, max_bad_fraction=0.5))
    assert len(a.images) == 3 and a.table.equals(b.table)


# --- cub -------------------------------------------------------------------------------------


def cub_layout(root: Path) -> None:
    base = root / "CUB_200_2011"  # the StackGAN/AttnGAN "birds" layout: text/ beside it
    names = ["001.Albatross/a_1.jpg", "001.Albatross/a_2.jpg", "002.Auklet/b_1.jpg", "002.Auklet/b_2.jpg"]
    for i, name in enumerate(names):
        img = Image.new("RGB", (100, 80), (30, 30, 220))  # blue, with a red bird in its box
        img.paste((220, 30, 30), (10, 10, 30, 30))
        (base / "images" / name).parent.mkdir(parents=True, exist_ok=True)
        img.save(base / "images" / name, quality=95)
        text = root / "text" / Path(name).with_suffix(".txt")
        text.parent.mkdir(parents=True, exist_ok=True)
        text.write_text(f"bird {i} has a red body\nbird {i} is small\n", encoding="utf-8")
    (base / "images.txt").write_text("".join(f"{i + 1} {n}\n" for i, n in enumerate(names)))
    (base / "train_test_split.txt").write_text("1 1\n2 1\n3 0\n4 0\n")
    (base / "bounding_boxes.txt").write_text("".join(f"{i + 1} 10.0 10.0 20.0 20.0\n" for i in range(4)))
    (root / "text" / "002.Auklet" / "b_2.txt").write_text("   \n" + NON_ASCII + "\n", encoding="utf-8")


def test_cub_split_crop_and_captions(tmp_path: Path) -> None:
    cub_layout(tmp_path)
    ds = cub.read(params(tmp_path, "cub", max_bad_fraction=0.5))
    t = ds.table
    assert list(t.groupby("split")["image_index"].nunique().items()) == [("test", 2), ("train", 2)]
    assert set(t["class"]) == {"001.Albatross", "002.Auklet"}
    assert NON_ASCII in set(t["caption"])
    assert skipped(ds) == {"text/002.Auklet/b_2.txt:1": "empty caption"}
    # Cropped around the box the centre is the red bird; the whole image's centre is blue.
    r = ds.images.shape[1] // 2
    assert ds.images[0, r, r, 0] > 150 and ds.images[0, r, r, 2] < 100
    whole = cub.read(params(tmp_path, "cub", cub_crop=False, max_bad_fraction=0.5))
    assert whole.images[0, r, r, 2] > 150 and whole.images[0, r, r, 0] < 100


def test_cub_missing_metadata_names_the_file(tmp_path: Path) -> None:
    cub_layout(tmp_path)
    (tmp_path / "CUB_200_2011" / "train_test_split.txt").unlink()
    with pytest.raises(IngestError, match=r"train_test_split\.txt at "):
        cub.read(params(tmp_path, "cub"))


# --- coco ------------------------------------------------------------------------------------


def test_coco_splits_and_bad_captions(tmp_path: Path) -> None:
    for part, split_ids in (("train2014", (1, 2, 3)), ("val2014", (10, 11))):
        images = [{"id": i, "file_name": f"COCO_{part}_{i:012d}.jpg"} for i in split_ids]
        for img in images:
            jpeg(tmp_path / part / img["file_name"], (10 * img["id"], 100, 100), size=(64, 48))
        anns = [{"id": 100 + i, "image_id": i, "caption": f"A photo number {i}."} for i in split_ids]
        anns += [{"id": 200 + i, "image_id": i, "caption": f"Another view of {i}"} for i in split_ids]
        if part == "train2014":
            anns += [{"id": 300, "image_id": 1, "caption": "  "},
                     {"id": 301, "image_id": 2, "caption": NON_ASCII},
                     {"id": 302, "image_id": 3, "caption": "BADBYTES"}]
        raw = json.dumps({"images": images, "annotations": anns}, ensure_ascii=False).encode("utf-8")
        (tmp_path / "annotations").mkdir(exist_ok=True)
        (tmp_path / "annotations" / f"captions_{part}.json").write_bytes(raw.replace(b"BADBYTES", b"bad \xff\xfe"))
    truncated_jpeg(tmp_path / "val2014" / "COCO_val2014_000000000011.jpg")
    ds = coco.read(params(tmp_path, "coco", max_bad_fraction=0.5))
    assert skipped(ds) == {
        "val2014/COCO_val2014_000000000011.jpg": skipped(ds)["val2014/COCO_val2014_000000000011.jpg"],
        "annotations/captions_train2014.json#annotation=300": "empty caption",
        "annotations/captions_train2014.json#annotation=302": "caption is not valid UTF-8",
    }
    t = ds.table
    assert len(ds.images) == 4 and len(t) == 3 * 2 + 1 + 2
    assert t.groupby("split")["image_index"].nunique().to_dict() == {"test": 1, "train": 3}
    assert NON_ASCII in set(t["caption"])


def test_coco_missing_annotations_names_the_path(tmp_path: Path) -> None:
    (tmp_path / "train2014").mkdir()
    with pytest.raises(IngestError, match=r"captions_train2014\.json at .*annotations"):
        coco.read(params(tmp_path, "coco"))


# --- folder ----------------------------------------------------------------------------------


def test_folder_jsonl_with_split_class_and_bad_captions(tmp_path: Path) -> None:
    for i in range(4):
        jpeg(tmp_path / "pics" / f"{i}.png", (60 * i, 50, 50))
    lines = [json.dumps({"image": f"pics/{i}.png", "caption": f"picture {i}", "split": "test" if i == 3 else "train",
                         "class": f"c{i % 2}"}) for i in range(4)]
    lines += [json.dumps({"image": "pics/0.png", "caption": NON_ASCII}, ensure_ascii=False),
              json.dumps({"image": "pics/1.png", "caption": ""}),
              '{"image": "pics/2.png", "caption": "bad \xff"}']
    data = "\n".join(lines).encode("utf-8").replace("bad \xff".encode("utf-8"), b"bad \xff")
    (tmp_path / "captions.jsonl").write_bytes(data)
    ds = folder.read(params(tmp_path, "folder", captions_file="captions.jsonl", max_bad_fraction=0.5))
    assert skipped(ds) == {"captions.jsonl:6": "empty caption", "captions.jsonl:7": "caption is not valid UTF-8"}
    t = ds.table
    assert NON_ASCII in set(t["caption"]) and len(t) == 5
    assert t.loc[t["caption"] == "picture 3", "split"].item() == "test"
    assert set(t["class"]) == {"c0", "c1"}


def test_folder_missing_captions_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(IngestError, match=r"captions file 'captions\.csv' at .*captions\.csv"):
        folder.read(params(tmp_path, "folder"))


def test_registry_knows_every_dataset_name() -> None:
    names = IngestParams.model_fields["dataset"].annotation.__args__
    assert {n: callable(get_reader(n)) for n in names} == dict.fromkeys(names, True)
    with pytest.raises(IngestError, match="unknown dataset"):
        get_reader("imagenet")


def test_folder_reads_only_inside_its_root_and_lists_uncaptioned(tmp_path: Path) -> None:
    root, secret = tmp_path / "data", tmp_path / "elsewhere"
    for i in range(3):
        jpeg(root / "pics" / f"{i}.png", (60 * i, 50, 50))
    jpeg(root / "pics" / "spare.png")  # named by no row
    jpeg(secret / "secret.png", (1, 2, 3))
    (root / "pics" / "link_out.png").symlink_to(secret / "secret.png")
    (root / "pics" / "link_in.png").symlink_to(root / "pics" / "0.png")  # inside: allowed
    rows = ["image,caption", "pics/0.png,zero", "pics/1.png,one", "pics/2.png,two", "pics/link_in.png,zero again",
            "../elsewhere/secret.png,escape", f"{secret / 'secret.png'},absolute", "pics/link_out.png,via symlink"]
    (root / "captions.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    ds = folder.read(params(root, "folder", max_bad_fraction=0.5))
    reasons = skipped(ds)
    for rel in ("../elsewhere/secret.png", str(secret / "secret.png"), "pics/link_out.png"):
        assert reasons[rel].startswith("outside ingest.root"), (rel, reasons)
    assert reasons["pics/spare.png"] == "no caption row in captions.csv"
    assert set(ds.table["caption"]) == {"zero", "one", "two", "zero again"}
    # No pixel of the outside file reached the images: its colour (1, 2, 3) is nowhere.
    assert not (np.abs(ds.images.astype(int) - [1, 2, 3]).sum(-1) < 6).any()
