"""What every metric reads: the data, an image source, settings, and judges trained on demand.

Judges (attribute classifier, image encoder) and the images generated for each split are built
once and shared, so attribute and swap accuracy, diversity, fid_domain and R-precision together
cost one training of each judge and one pass of the generator per split.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from t2i.config import EvaluateParams
from t2i.eval.classifier import AttributeClassifier, attributes_in, train_classifier
from t2i.eval.image_encoder import ImageEncoder, train_image_encoder
from t2i.eval.sampling import ImageSource, split_seeds
from t2i.models.fit import FitSettings


# Splits whose captions get generated images and attribute/swap scores, in report order.
# ``novel_wording``: sentence frames (and words) never trained on; ``probe``: hand-written captions
# (t2i/data/probe_captions.csv) that are not rows of the caption table and have no real image.
SCORED_SPLITS = ("test", "unseen", "novel_wording", "probe")


def judge_fit(params: EvaluateParams) -> FitSettings:
    return FitSettings(steps=params.classifier_steps, seed=params.seed)


@dataclass
class EvalContext:
    table: pd.DataFrame          # captions.parquet
    images: np.ndarray           # (N, R, R, 3) uint8 real images
    text_vectors: np.ndarray     # (n_captions, D), row-aligned with ``table``
    source: ImageSource
    params: EvaluateParams
    device: torch.device
    data_key: str | None = None  # fingerprint of the data: caches the judges when given
    # Caption tables scored beside the table's splits (``{"probe": load_probe()}``): their rows
    # get generated images only; they never train a judge nor count as real images.
    extra_splits: dict[str, pd.DataFrame] = field(default_factory=dict)
    _classifier: AttributeClassifier | None = field(default=None, repr=False)
    _encoder: ImageEncoder | None = field(default=None, repr=False)
    _generated: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    _rows: dict[str, pd.DataFrame] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if len(self.text_vectors) != len(self.table):
            raise ValueError(f"{len(self.text_vectors)} sentence vectors for {len(self.table)} captions: "
                             "data/embeddings is stale; run `dvc repro embed`")

    @property
    def has_attributes(self) -> bool:
        return bool(attributes_in(self.table))

    @property
    def judge_fit(self) -> FitSettings:
        """How both judges are trained: ``evaluate.classifier_steps`` steps from ``evaluate.seed``."""
        return judge_fit(self.params)

    def classifier(self) -> AttributeClassifier:
        if self._classifier is None:
            self._classifier = train_classifier(self.table, self.images, self.judge_fit, self.device,
                                                data_key=self.data_key)
        return self._classifier

    def encoder(self) -> ImageEncoder:
        if self._encoder is None:
            self._encoder = train_image_encoder(self.table, self.images, self.text_vectors, self.judge_fit,
                                                self.device, data_key=self.data_key)
        return self._encoder

    def rows(self, split: str) -> pd.DataFrame:
        """Up to ``max_captions`` caption rows of a split, a fixed seeded sample (index kept)."""
        if split not in self._rows:
            rows = self.extra_splits.get(split)
            if rows is None:
                rows = self.table[self.table["split"] == split]
            if len(rows) > self.params.max_captions:
                rows = rows.sample(self.params.max_captions, random_state=self.params.seed)
            self._rows[split] = rows
        return self._rows[split]

    def generated(self, split: str) -> np.ndarray:
        """(n, R, R, 3) one generated image per caption row of ``rows(split)``."""
        if split not in self._generated:
            rows = self.rows(split)
            seeds = split_seeds(self.params.seed, split, len(rows))
            self._generated[split] = self.source(rows["caption"].tolist(), seeds.tolist())
        return self._generated[split]

    def real_images(self, split: str) -> np.ndarray:
        """(n, R, R, 3) real images of a split, each once; test excludes any image also in train."""
        idx = set(self.table.loc[self.table["split"] == split, "image_index"])
        if split != "train":
            idx -= set(self.table.loc[self.table["split"] == "train", "image_index"])
        return self.images[np.sort(np.fromiter(idx, dtype=np.int64, count=len(idx)))]
