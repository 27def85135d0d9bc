"""Wrong captions for the discriminator: which captions relate to which, and what a step draws.

Mining (once, from the caption strings): for each train caption, its word-order swap, the
captions one word away, the captions with the same words in another order, and the other
captions of its image. Dataset-agnostic on purpose: a swap is exactly what a bag-of-words
encoder cannot tell apart, and a one-word miss is the negative that makes every attribute slot
matter (a swap only ever exchanges two colours, so a D that ignores a third attribute still
rejects every swap and every random caption).

Sampling (every step, from the step's generator): one wrong caption per real image for the
hinge, K candidates per caption for the contrastive term, and more true captions of each real
image. Everything is returned as train rows in one `Negatives`; the step turns rows into text.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from t2i.config import LossParams

_WORD = re.compile(r"[\w']+")


def words(caption: str) -> tuple[str, ...]:
    return tuple(_WORD.findall(caption.lower()))


def bag_of_words(caption: str) -> tuple[str, ...]:
    return tuple(sorted(words(caption)))


def swap_partners(captions: list[str]) -> np.ndarray:
    """For each caption, the index of another caption with the same bag of words but a different
    word order (e.g. "a red flower with a yellow stem" / "a yellow flower with a red stem"), or -1."""
    groups: dict[tuple[str, ...], dict[str, list[int]]] = {}
    for i, text in enumerate(captions):
        groups.setdefault(bag_of_words(text), {}).setdefault(" ".join(words(text)), []).append(i)
    partner = np.full(len(captions), -1, dtype=np.int64)
    for orders in groups.values():
        if len(orders) < 2:
            continue
        keys = list(orders)
        for k_i, key in enumerate(keys):
            other = orders[keys[(k_i + 1) % len(keys)]]  # any differently-ordered caption
            for j, i in enumerate(orders[key]):
                partner[i] = other[j % len(other)]
    return partner


def _distinct_texts(captions: list[str], image_index: np.ndarray) -> tuple[
        list[tuple[str, ...]], dict[tuple[str, ...], int], dict[tuple[str, ...], set[int]]]:
    """Tokens of each caption, the first row of each distinct text, and the images it describes."""
    tokens = [words(c) for c in captions]
    first_row: dict[tuple[str, ...], int] = {}
    images_of: dict[tuple[str, ...], set[int]] = {}
    for i, w in enumerate(tokens):
        first_row.setdefault(w, i)
        images_of.setdefault(w, set()).add(int(image_index[i]))
    return tokens, first_row, images_of


def _csr(lists: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Per-caption row lists as CSR arrays: caption i's rows are ``rows[offsets[i]:offsets[i + 1]]``."""
    counts = np.array([len(rows) for rows in lists], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    rows = np.fromiter((r for rows in lists for r in rows), dtype=np.int64, count=int(offsets[-1]))
    return offsets, rows


def near_miss_partners(captions: list[str], image_index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each caption, the captions that differ from it in exactly one word ("the center is
    yellow" / "the center is blue"), as CSR arrays. One row per distinct text (identical texts
    share a vector); captions of the same image are left out, so a paraphrase is never a
    negative. On human captions a one-word miss can be a synonym (centre / center):
    train.loss.near_miss=0 turns them off."""
    tokens, first_row, images_of = _distinct_texts(captions, image_index)
    by_key: dict[tuple[int, tuple[str, ...]], list[tuple[str, ...]]] = {}
    for w in first_row:
        for pos in range(len(w)):
            by_key.setdefault((pos, w[:pos] + w[pos + 1 :]), []).append(w)
    near: dict[tuple[str, ...], list[int]] = {w: [] for w in first_row}
    for group in by_key.values():
        if len(group) < 2:
            continue
        for w in group:
            near[w].extend(first_row[o] for o in group if o != w and not images_of[o] & images_of[w])
    return _csr([near[w] for w in tokens])


def word_order_partners(captions: list[str], image_index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each caption, every caption with the same bag of words in another order, as CSR
    arrays like ``near_miss_partners`` (one row per distinct text, the caption's own image left
    out). ``swap_partners`` keeps one of them; a caption naming three colours has up to five
    (every permutation of the roles), and G's mistakes are often not the one kept."""
    tokens, first_row, images_of = _distinct_texts(captions, image_index)
    bags: dict[tuple[str, ...], list[tuple[str, ...]]] = {}
    for w in first_row:
        bags.setdefault(tuple(sorted(w)), []).append(w)
    others = {w: [first_row[o] for o in group if o != w and not images_of[o] & images_of[w]]
              for group in bags.values() for w in group}
    return _csr([others[w] for w in tokens])


def image_captions(image_index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each caption, the other captions of its image, as CSR arrays (in row order). Real
    datasets have 5-10 captions per image (CUB, Oxford-102), the synthetic one 4; the
    contrastive term can score an image against all of them (``train.loss.contrastive_captions``)."""
    order = np.argsort(image_index, kind="stable")
    sorted_images = image_index[order]
    starts = np.searchsorted(sorted_images, image_index, side="left")
    ends = np.searchsorted(sorted_images, image_index, side="right")
    return _csr([[int(r) for r in order[starts[i] : ends[i]] if r != i] for i in range(len(image_index))])


@dataclass(frozen=True)
class CSR:
    """One list of train rows per caption: caption i's are ``rows[offsets[i]:offsets[i + 1]]``."""
    offsets: torch.Tensor  # (M + 1,) int64
    rows: torch.Tensor     # (K,) int64 rows of the train captions

    @classmethod
    def of(cls, arrays: tuple[np.ndarray, np.ndarray]) -> "CSR":
        return cls(torch.from_numpy(arrays[0]), torch.from_numpy(arrays[1]))

    def count(self, rows: torch.Tensor) -> torch.Tensor:
        """(B,) how many entries each of ``rows`` has."""
        return self.offsets[rows + 1] - self.offsets[rows]

    def draw(self, rows: torch.Tensor, k: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """K entries per row, uniformly with replacement: (entries (B, K), valid (B, K) bool).
        A row without entries gets K invalid ones; an empty list draws nothing from ``gen``."""
        if len(self.rows) == 0:
            return torch.zeros(len(rows), k, dtype=torch.long), torch.zeros(len(rows), k, dtype=torch.bool)
        start, count = self.offsets[rows], self.count(rows)
        j = start[:, None] + (torch.rand(len(rows), k, generator=gen) * count[:, None]).long()  # (B, K)
        return self.rows[j.clamp(max=len(self.rows) - 1)], (count > 0)[:, None].expand(-1, k)

    def first(self, rows: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The first ``n`` entries of each row (no random draw): (entries (B, n), exists (B, n))."""
        if n == 0 or len(self.rows) == 0:
            return torch.zeros(len(rows), n, dtype=torch.long), torch.zeros(len(rows), n, dtype=torch.bool)
        start, count = self.offsets[rows], self.count(rows)
        j = torch.arange(n)[None, :]  # (1, n)
        return self.rows[(start[:, None] + j).clamp(max=len(self.rows) - 1)], j < count[:, None]


def _empty_csr() -> CSR:
    return CSR(torch.zeros(1, dtype=torch.long), torch.zeros(0, dtype=torch.long))


@dataclass(frozen=True)
class CaptionRelations:
    """How the M train captions relate, mined once from their text (row = train caption; a
    partner row >= M is an embedded swap caption, `TrainData.pool_text`)."""
    partner: torch.Tensor  # (M,) int64 row of the word-order swap, or -1
    near: CSR              # one-word misses of other images (near_miss_partners)
    orders: CSR            # same words, other order, other images (word_order_partners)
    siblings: CSR          # the same image's other captions (image_captions)
    # near plus the nearest other-image captions in sentence space (t2i/train/nearest.py):
    # hard negatives for every caption of any dataset; train.loss.nearest_negatives picks it.
    near_or_nearest: CSR = field(default_factory=_empty_csr)

    @classmethod
    def mine(cls, captions: list[str], image_index: np.ndarray) -> "CaptionRelations":
        return cls(partner=torch.from_numpy(swap_partners(captions)),
                   near=CSR.of(near_miss_partners(captions, image_index)),
                   orders=CSR.of(word_order_partners(captions, image_index)),
                   siblings=CSR.of(image_captions(image_index)))

    def for_loss(self, cfg: LossParams) -> "CaptionRelations":
        """The relations a step draws from: with `nearest_negatives`, the hard negatives include
        the sentence-space neighbours (where they were mined)."""
        if cfg.nearest_negatives and len(self.near_or_nearest.rows):
            return replace(self, near=self.near_or_nearest)
        return self


def candidate_rows(rel: CaptionRelations, rows: torch.Tensor, k: int, word_orders: int,
                   gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """K one-word misses (drawn) plus the first ``word_orders`` other orders of each row:
    rows (B, K + word_orders), valid (B, K + word_orders). The other orders' sentence vectors lie
    nearest the true one; inside the softmax a candidate's gradient grows as D's margin on it
    shrinks, where the hinge weighs every wrong caption alike."""
    cand, valid = rel.near.draw(rows, k, gen)
    if word_orders > 0:
        extra, ok = rel.orders.first(rows, word_orders)
        cand, valid = torch.cat([cand, extra], dim=1), torch.cat([valid, ok], dim=1)
    return cand, valid


def distinct_candidates(cand: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's distinct valid candidates, left-aligned, with how often each was drawn.

    cand (B, K) train rows, valid (B, K) bool -> rows (B, U), count (B, U) int64 (0: an empty
    slot), U = the most distinct candidates of any row (at least 1). K draws with replacement from
    a caption's few one-word misses repeat each one many times, and a row without any still fills
    K slots: scoring only the distinct ones, with log(count) added to each one's logit
    (`candidate_ce`'s ``log_weight``), gives the same cross-entropy and gradient for a fraction of
    the scoring (on the grammar's train set, ~2 distinct valid of 38 slots per caption)."""
    b = cand.shape[0]
    key, _ = torch.where(valid, cand, -1).sort(dim=1)  # (B, K), empty slots (-1) first
    real = key >= 0
    first = real.clone()
    first[:, 1:] &= key[:, 1:] != key[:, :-1]  # (B, K) the first slot of each distinct value
    u = max(1, int(first.sum(1).max())) if cand.numel() else 1
    slot = torch.where(real, first.cumsum(1) - 1, u)  # (B, K) its distinct value's place; empty -> spare column
    rows = torch.zeros(b, u + 1, dtype=cand.dtype, device=cand.device).scatter_(1, slot, key.clamp(min=0))  # equal values per place
    count = torch.zeros(b, u + 1, dtype=torch.long, device=cand.device).scatter_add_(1, slot, real.long())
    return rows[:, :u], count[:, :u]


@dataclass
class Mismatch:
    """The wrong caption of each real image, as drawn (before any ranking)."""
    rows: torch.Tensor  # (B,) train row of the wrong caption; -1: the next image's caption in the batch
    near: torch.Tensor  # (B,) bool: rows whose wrong caption is a one-word miss
    pool: torch.Tensor  # (B, P) train rows of the drawn one-word misses (unused rows: 0)


def draw_mismatch(rel: CaptionRelations, rows: torch.Tensor, gen: torch.Generator,
                  near_miss: float = 1.0, pool: int = 1) -> Mismatch:
    """Per row, with odds 1 : `near_miss` : 1, the word-order swap, a one-word miss or the
    caption of another image in the batch -- falling back to the last where the row has no
    swap / no near miss. For a one-word miss, `pool` candidates are drawn; the first is taken
    (`hard_mismatch` or D's own forward ranks them instead)."""
    partner = rel.partner[rows]
    u = torch.rand(len(rows), generator=gen)
    pick = torch.full((len(rows),), -1, dtype=torch.long)
    # u in [0, swap_end): swap; [swap_end, near_end): near miss; the rest: another caption.
    swap_end, near_end = 1.0 / (2.0 + near_miss), (1.0 + near_miss) / (2.0 + near_miss)
    use_swap = (partner >= 0) & (u < swap_end)
    pick[use_swap] = partner[use_swap]
    use_near = torch.zeros(len(rows), dtype=torch.bool)
    cand = torch.zeros(len(rows), max(1, pool), dtype=torch.long)
    if near_miss > 0:
        use_near = (rel.near.count(rows) > 0) & (u >= swap_end) & (u < near_end)
        if bool(use_near.any()):  # drawn only then, so a step without one draws nothing more
            cand, _ = rel.near.draw(rows, pool, gen)  # (B, pool)
            pick[use_near] = cand[:, 0][use_near]
    return Mismatch(rows=pick, near=use_near, pool=cand)


def mismatch_text(text: torch.Tensor, table: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """(B, D) vectors of the wrong captions: ``table[rows]``, and where a row is -1 the next
    image's caption in the batch (``text`` (B, D) rolled by one)."""
    shuffled = text.roll(1, dims=0)  # (B, D)
    if not bool((rows >= 0).any()):
        return shuffled
    chosen = table[rows.clamp(min=0)].to(text.device)
    return torch.where((rows >= 0).to(text.device)[:, None], chosen, shuffled)


@dataclass
class Negatives:
    """What one step draws for D and G, as train rows (B = batch, E = extra true captions)."""
    mismatch: Mismatch
    cand_rows: torch.Tensor | None = None    # (B, K') contrastive candidates of each true caption
    cand_valid: torch.Tensor | None = None   # (B, K') bool
    extra_rows: torch.Tensor | None = None   # (E,) more true captions of the real images (D's term)
    extra_image: torch.Tensor | None = None  # (E,) batch row of each one's image
    extra_exists: torch.Tensor | None = None    # (E,) bool: empty slots (an image with fewer captions)
    extra_cand_rows: torch.Tensor | None = None  # (E, K') their own candidates
    extra_cand_valid: torch.Tensor | None = None  # (E, K') bool


def draw_negatives(rel: CaptionRelations, rows: torch.Tensor, gen: torch.Generator, cfg: LossParams,
                   candidates: bool) -> Negatives:
    """All of one step's draws, in a fixed order on ``gen`` (the mismatch, then the candidates,
    then the extra captions' candidates): a term with weight 0 draws nothing, so the others'
    draws do not move. ``candidates``: a contrastive or matcher term will score them."""
    rel = rel.for_loss(cfg)
    neg = Negatives(draw_mismatch(rel, rows, gen, cfg.near_miss, cfg.near_miss_pool))
    if not candidates:
        return neg
    k, orders = cfg.contrastive_candidates, cfg.contrastive_word_order
    neg.cand_rows, neg.cand_valid = candidate_rows(rel, rows, k, orders, gen)
    if cfg.swap_candidate:  # the word-order swap: the candidate only the words' roles tell apart
        partner = rel.partner[rows]  # (B,)
        neg.cand_rows = torch.cat([neg.cand_rows, partner.clamp(min=0)[:, None]], dim=1)
        neg.cand_valid = torch.cat([neg.cand_valid, (partner >= 0)[:, None]], dim=1)
    if cfg.contrastive_d > 0 and cfg.contrastive_captions > 1:
        # The image's other captions, each against its own candidates, in D's term only: more
        # evidence per feature pass, while G keeps drawing each caption as sampled.
        sib, exists = rel.siblings.first(rows, cfg.contrastive_captions - 1)  # (B, n)
        neg.extra_rows, neg.extra_exists = sib.flatten(), exists.flatten()  # (E,) with E = B * n
        neg.extra_image = torch.arange(len(rows)).repeat_interleave(sib.shape[1])
        neg.extra_cand_rows, valid = candidate_rows(rel, neg.extra_rows, k, orders, gen)
        if cfg.swap_candidate:
            partner = rel.partner[neg.extra_rows]  # (E,)
            neg.extra_cand_rows = torch.cat([neg.extra_cand_rows, partner.clamp(min=0)[:, None]], dim=1)
            valid = torch.cat([valid, (partner >= 0)[:, None]], dim=1)
        neg.extra_cand_valid = valid & neg.extra_exists[:, None]
    return neg


def hard_mismatch(rel: CaptionRelations, table: torch.Tensor, rows: torch.Tensor, gen: torch.Generator,
                  cfg: LossParams, rank: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """Wrong captions (B, D) for the train captions `rows` of `table` (M, D), drawn as
    `draw_mismatch` does; with near_miss_pool > 1 and `rank` (raw candidate sentences (B, P, D) ->
    match scores (B, P)), a one-word miss is the best-matching of the pool (hard negatives,
    VSE++, Faghri et al. 2018).
    The training step ranks inside D's own forward instead; benchmarks/d_proxy.py uses this."""
    m = draw_mismatch(rel, rows, gen, cfg.near_miss, cfg.near_miss_pool)
    wrong = mismatch_text(table[rows], table, m.rows)
    if cfg.near_miss_pool <= 1 or rank is None or not bool(m.near.any()):
        return wrong
    best = rank(table[m.pool]).argmax(dim=1).cpu()  # (B,)
    hard = table[m.pool[torch.arange(len(rows)), best]]  # (B, D)
    return torch.where(m.near[:, None], hard, wrong)
