"""Fitting the matcher (t2i/models/matcher.py) on real train pairs, and its term in G's loss.

Fitting: each step draws B train captions and their images (mildly augmented, as the judges
are); each image scores its caption against K one-word misses and the captions with the same
words in other orders, the candidates of D's contrastive term, and a cross-entropy asks that its
own caption win. The loop the evaluation judges also train with (`t2i.models.fit.fit`: Adam,
one-cycle schedule) runs it.
"""

from __future__ import annotations

import torch

from t2i.config import MatcherParams
from t2i.models.fit import FitSettings, fit
from t2i.models.matcher import Matcher
from t2i.models.trunk import augment
from t2i.train.data import TrainData
from t2i.train.losses import match_ce
from t2i.train.negatives import candidate_rows


def fit_matcher(data: TrainData, params: MatcherParams, device: torch.device) -> Matcher:
    """A matcher trained for ``params.steps`` batches on the train captions of ``data``; ends in
    eval mode with gradients off (it is frozen during the GAN's training)."""
    torch.manual_seed(params.seed)  # the networks' initial weights
    matcher = Matcher(data.text_dim, params.width)
    matcher.text_norm.fit(data.text)
    matcher.to(device)
    text = data.text.to(device)  # (M, D)

    def batch_loss(rows: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        real = data.batch(rows, device, channels_last=False).images  # (B, 3, R, R)
        cand, valid = candidate_rows(data.relations, rows, params.candidates, params.word_orders, gen)  # (B, K')
        b, k = cand.shape
        emb = matcher.embed_text(text[torch.cat([rows, cand.flatten()]).to(device)])  # (B + B*K', E)
        return match_ce(matcher, augment(real, gen), emb[:b], emb[b:].view(b, k, -1), valid.to(device))

    fit(matcher, FitSettings(params.steps, params.seed, params.batch_size), len(data.text), batch_loss, "matcher")
    return matcher.requires_grad_(False)
