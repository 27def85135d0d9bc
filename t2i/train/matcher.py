"""Fitting the matcher (t2i/models/matcher.py) on real train pairs, and its term in G's loss.

Fitting: each step draws B train captions and their images (mildly augmented, as the judges
are); each image scores its caption against K one-word misses and the captions with the same
words in other orders, the candidates of D's contrastive term, plus its caption's word-order swap
and the batch's other captions (`batch_negatives`), and a cross-entropy asks that its own caption
win. The hard candidates exist only where a dataset repeats its sentence frames (one-word misses:
a third of the grammar's captions, few human ones); the batch's captions exist for every caption
and teach every attribute, the swap teaches which word belongs to which part. Another image's
caption can still be true of the image (a false negative): on the grammar's train set, 1.1% of
in-batch pairs state only what also holds for the other image, against 27% of the sentence-space
neighbours (t2i/train/nearest.py). The loop the evaluation judges also train with
(`t2i.models.fit.fit`: Adam, one-cycle schedule) runs it.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from t2i.atomic import atomic_dir
from t2i.config import MatcherParams
from t2i.models.fit import FitSettings, fit
from t2i.models.matcher import Matcher
from t2i.models.trunk import augment
from t2i.train.data import TrainData
from t2i.train.losses import match_ce
from t2i.train.negatives import candidate_rows, distinct_candidates
from t2i.train.runtime import setup_runtime


def distinct_captions(rows: torch.Tensor, image_index: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """(B, B) bool: caption j of the batch is a fair negative for caption i's image, i.e. it
    belongs to another image and has another text (identical texts share one vector)."""
    image = image_index[rows].to(text.device)  # (B,)
    vectors = text[rows.to(text.device)]  # (B, D)
    same_text = (vectors[:, None] == vectors[None]).all(-1)  # (B, B)
    return (image[:, None] != image[None]) & ~same_text


def fit_matcher(data: TrainData, params: MatcherParams, device: torch.device) -> Matcher:
    """A matcher trained for ``params.steps`` batches on the train captions of ``data``; ends in
    eval mode with gradients off (it is frozen during the GAN's training). Where the data has
    token states it scores words against regions too, and each caption's embedded word-order
    swap joins its candidates."""
    torch.manual_seed(params.seed)  # the networks' initial weights
    matcher = Matcher(data.text_dim, params.width, data.token_dim)
    matcher.caption.text_norm.fit(data.text)
    if data.tokens is not None:
        matcher.caption.token_norm.fit(data.tokens.fit_sample(4096, params.seed))
    matcher.to(device)
    text = data.pool_text.to(device)  # (P, D): train captions, then embedded swaps
    partner = data.relations.partner
    # The token PCA is frozen once fitted: every pool row goes through it once, as the GAN's
    # step does, instead of ~2,500 rows of 512-d states each step (most of a step's time).
    table = data.tokens.reduced_table(matcher.reduce_tokens, device) if data.tokens is not None else None

    def batch_loss(rows: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        real = data.batch(rows, device, channels_last=False).images  # (B, 3, R, R)
        cand, valid = candidate_rows(data.relations, rows, params.candidates, params.word_orders, gen)  # (B, K')
        if data.tokens is not None:  # the swap: what only the words' roles tell apart
            cand = torch.cat([cand, partner[rows].clamp(min=0)[:, None]], dim=1)
            valid = torch.cat([valid, (partner[rows] >= 0)[:, None]], dim=1)
        cand, count = distinct_candidates(cand, valid)  # (B, U): each drawn caption scored once
        valid = count > 0
        b, k = cand.shape
        all_rows = torch.cat([rows, cand.flatten()]).to(device)  # (B + B*K',)
        words = None if table is None else (table[0][all_rows], table[1][all_rows])  # (B + B*K', T, k), (B + B*K', T)
        emb = matcher.embed_text(text[all_rows], *(words or (None, None)))  # (B + B*K', E)
        batch_valid = distinct_captions(rows, data.image_index, text) if params.batch_negatives else None
        return match_ce(matcher, augment(real, gen), emb[:b], emb[b:].view(b, k, -1), valid.to(device), words,
                        batch_valid, count.to(device))

    fit(matcher, FitSettings(params.steps, params.seed, params.batch_size), len(data.text), batch_loss, "matcher")
    return matcher.requires_grad_(False)


def fit_matcher_into(data: TrainData, params: MatcherParams, out: Path) -> dict:
    """The `matcher` stage's work: set up the device and threads as train does, fit, and save into
    ``out`` atomically (a failed fit keeps the old matcher). Returns the stage's summary line."""
    device = setup_runtime(params.device, "fp32", False, params.threads, key="matcher.device").device
    t0 = time.perf_counter()
    matcher = fit_matcher(data, params, device)
    with atomic_dir(out) as tmp:
        matcher.save(tmp)
    return {"steps": params.steps, "seconds": round(time.perf_counter() - t0, 1), "device": str(device),
            "out": str(out), "words": matcher.uses_tokens}
