"""What the evaluation's judge reads in a served image (synthetic data only).

The evaluate stage trains an attribute classifier on the real prepared images and caches it
(``t2i.eval.cache``: ``<cache>/eval/classifier-<key>.safetensors`` + ``.json`` with its classes,
``<cache>`` = ``$T2I_CACHE_DIR`` or ``.cache/t2i``). The key hashes the training data, which a
served model does not carry, so ``auto`` takes the most recently written classifier in that
cache: the one the last `dvc repro` of this project evaluated with. ``--judge PATH`` names a
weights file; ``--judge none`` turns it off. Real datasets have no classifier, so no judge shows.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file

from t2i.data.templates import parse_caption
from t2i.eval import cache
from t2i.eval.classifier import ATTRIBUTES, AttributeClassifier, _Net


@dataclass
class Judge:
    classifier: AttributeClassifier
    path: Path

    def read(self, images: np.ndarray, captions: list[str]) -> list[dict[str, Any]]:
        """uint8 (N, R, R, 3) + the caption of each image -> per image what the judge reads and,
        where the caption is a template one, whether each stated attribute matches."""
        pred = self.classifier.predict(images)  # {attribute: (N,)}
        out = []
        for i, caption in enumerate(captions):
            reads = {a: str(pred[a][i]) for a in self.classifier.attributes}
            parsed = parse_caption(caption)
            stated = {a: str(v) for a, v in (parsed[1] if parsed else {}).items() if a in reads}
            out.append({"reads": reads, "stated": stated,
                        "matches": {a: reads[a] == v for a, v in stated.items()}})
        return out


def _newest_cached() -> Path | None:
    metas = sorted(cache.cache_dir().glob("classifier-*.json"), key=lambda p: p.stat().st_mtime, reverse=True)
    return next((m.with_suffix(".safetensors") for m in metas if m.with_suffix(".safetensors").is_file()), None)


def load_judge(spec: str, device: torch.device) -> Judge | None:
    """``spec``: "auto" (newest cached classifier, None when there is none), "none", or a
    ``.safetensors`` path with its ``.json`` (classes) beside it."""
    if spec == "none":
        return None
    weights = _newest_cached() if spec == "auto" else Path(spec)
    if weights is None:
        return None
    meta_file = weights.with_suffix(".json")
    if not (weights.is_file() and meta_file.is_file()):
        raise FileNotFoundError(f"judge {weights}: needs the weights file and {meta_file.name} beside it")
    classes = json.loads(meta_file.read_text(encoding="utf-8")).get("classes")
    if not isinstance(classes, dict) or not set(classes) <= set(ATTRIBUTES):
        raise ValueError(f"{meta_file} does not describe an attribute classifier (no 'classes' of {ATTRIBUTES})")
    net = _Net(classes)
    net.load_state_dict(load_file(str(weights)))
    return Judge(AttributeClassifier(net.to(device).eval(), classes, device), weights)
