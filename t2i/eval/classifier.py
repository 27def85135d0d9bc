"""The attribute classifier: reads petal/centre/stem colour and petal count from an image.

Trained on real prepared *train* images only, so that its accuracy on real *test* images says
whether it can be trusted as a judge of generated images (it must be near 1.0, or the
attribute metrics are void). One shared trunk with one head per attribute.
"""

from __future__ import annotations

import json
import logging
from dataclasses import astuple, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from t2i.atomic import atomic_dir
from t2i.eval import cache
from t2i.models.fit import FitSettings, fit
from t2i.models.trunk import Trunk, apply, augment, to_input

log = logging.getLogger(__name__)

COLOR_ROLES = ("petal_color", "center_color", "stem_color")
ATTRIBUTES = (*COLOR_ROLES, "petal_count")
# A saved classifier: a directory (the evaluate stage's eval/judge/) holding these two files.
JUDGE_DIR = "judge"  # under the evaluate stage's out dir
JUDGE_WEIGHTS, JUDGE_META = "classifier.safetensors", "classifier.json"


def attributes_in(table: pd.DataFrame) -> list[str]:
    """The ground-truth attributes this caption table carries (none for real datasets)."""
    return [a for a in ATTRIBUTES if a in table.columns]


def mentions(table: pd.DataFrame) -> list[set[str]]:
    """Per row, the attributes its caption states (all attributes when there is no column)."""
    if "mentions" not in table.columns:
        every = set(attributes_in(table))
        return [every for _ in range(len(table))]
    return [{m.strip() for m in str(v).split(",") if m.strip()} for v in table["mentions"]]


def image_labels(table: pd.DataFrame, attrs: list[str]) -> pd.DataFrame:
    """One row per image index with its attributes as strings (attributes belong to images)."""
    per_image = table.drop_duplicates("image_index").set_index("image_index")[attrs]
    return per_image.astype(str)


class _Net(nn.Module):
    def __init__(self, classes: dict[str, list[str]]) -> None:
        super().__init__()
        self.trunk = Trunk()
        self.heads = nn.ModuleDict({a: nn.Linear(256, len(c)) for a, c in classes.items()})

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.trunk(x)  # (B, 256)
        return {a: head(h) for a, head in self.heads.items()}  # each (B, n_classes)


@dataclass
class AttributeClassifier:
    net: _Net
    classes: dict[str, list[str]]
    device: torch.device

    @property
    def attributes(self) -> list[str]:
        return list(self.classes)

    def predict(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """uint8 (N, R, R, 3) -> {attribute: (N,) predicted value as str}."""
        self.net.eval()
        names = list(self.classes)
        # One pass: all heads' logits side by side, split afterwards.
        # ModuleDict keeps insertion order, so the heads come out in ``names`` order.
        logits = apply(lambda x: torch.cat(list(self.net(x).values()), 1), images, self.device)
        out: dict[str, np.ndarray] = {}
        start = 0
        for a in names:
            k = len(self.classes[a])
            out[a] = np.asarray(self.classes[a], dtype=object)[logits[:, start:start + k].argmax(1)]
            start += k
        return out


def train_classifier(table: pd.DataFrame, images: np.ndarray, settings: FitSettings,
                     device: torch.device, data_key: str | None = None) -> AttributeClassifier:
    """Fit on the train split's images; cached under ``data_key`` when it is given."""
    attrs = attributes_in(table)
    if not attrs:
        raise ValueError("this dataset has no ground-truth attributes to classify")
    all_labels = image_labels(table, attrs)
    # Classes from the whole table: an unseen-split value still gets a slot.
    classes = {a: sorted(all_labels[a].unique().tolist()) for a in attrs}
    key = cache.fingerprint("classifier", data_key, *astuple(settings), classes) if data_key else None
    torch.manual_seed(settings.seed)  # before building: the initial weights are part of the result
    net = _Net(classes).to(device)
    hit = cache.load("classifier", key) if key else None
    if hit is not None:
        net.load_state_dict(hit[0])
        log.info("attribute classifier loaded from cache (%s)", key)
        return AttributeClassifier(net.eval(), classes, device)

    train_idx = np.sort(table.loc[table["split"] == "train", "image_index"].unique())
    labels = all_labels.loc[train_idx]
    targets = {a: torch.tensor(labels[a].map({c: i for i, c in enumerate(classes[a])}).to_numpy(),
                               dtype=torch.long) for a in attrs}
    def batch_loss(pick: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        x = augment(to_input(images[train_idx[pick.numpy()]], device), gen)  # (B, 3, r, r)
        logits = net(x)
        return sum(F.cross_entropy(logits[a], targets[a][pick].to(device)) for a in attrs)  # type: ignore[return-value]

    fit(net, settings, len(train_idx), batch_loss, "classifier")
    if key:
        cache.save("classifier", key, net.state_dict(), {"classes": classes})
    return AttributeClassifier(net, classes, device)


def save_classifier(clf: AttributeClassifier, directory: Path | str) -> list[Path]:
    """Write ``directory`` (replaced whole, atomically) with the weights and the classes, the
    form ``load_classifier`` and `t2i serve --judge` read; returns the two files."""
    directory = Path(directory)
    with atomic_dir(directory) as tmp:
        from safetensors.torch import save_file

        save_file({k: v.detach().cpu().contiguous() for k, v in clf.net.state_dict().items()},
                  str(tmp / JUDGE_WEIGHTS))
        meta = {"kind": "attribute_classifier", "classes": clf.classes}
        (tmp / JUDGE_META).write_text(json.dumps(meta, indent=1), encoding="utf-8")
    return [directory / JUDGE_WEIGHTS, directory / JUDGE_META]


def load_classifier(path: Path | str, device: torch.device) -> AttributeClassifier:
    """A saved classifier: a directory from ``save_classifier``, or a ``.safetensors`` file with
    its ``.json`` (``{"classes": ...}``) beside it (the eval cache's layout). Raises
    FileNotFoundError / ValueError naming the file."""
    from t2i.safe_load import load_safetensors_checked

    path = Path(path)
    weights, meta_file = ((path / JUDGE_WEIGHTS, path / JUDGE_META) if path.is_dir()
                          else (path, path.with_suffix(".json")))
    for f in (weights, meta_file):
        if not f.is_file():
            raise FileNotFoundError(f"attribute classifier {path}: no {f.name} (the evaluate stage writes "
                                    f"eval/judge/{JUDGE_WEIGHTS} and {JUDGE_META})")
    try:
        classes = json.loads(meta_file.read_text(encoding="utf-8")).get("classes")
    except (json.JSONDecodeError, AttributeError) as exc:
        raise ValueError(f"{meta_file} is not a JSON object with 'classes': {exc}") from exc
    if not isinstance(classes, dict) or not classes or not set(classes) <= set(ATTRIBUTES):
        raise ValueError(f"{meta_file} does not describe an attribute classifier (no 'classes' of {ATTRIBUTES})")
    net = _Net(classes)
    try:
        net.load_state_dict(load_safetensors_checked(weights))
    except RuntimeError as exc:  # shapes or keys that do not match the classes
        raise ValueError(f"{weights} does not fit the classes in {meta_file.name}: {exc}") from exc
    return AttributeClassifier(net.to(device).eval(), classes, device)


def save_no_classifier(directory: Path | str, reason: str) -> list[Path]:
    """The judge directory of a dataset without ground truth: only a note (no weights, so
    `t2i serve --judge auto` shows no judge), so that the stage's ``eval/judge`` out exists."""
    directory = Path(directory)
    with atomic_dir(directory) as tmp:
        (tmp / JUDGE_META).write_text(json.dumps({"kind": "none", "classes": None, "reason": reason}, indent=1),
                                      encoding="utf-8")
    return [directory / JUDGE_META]
