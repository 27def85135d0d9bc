"""The caption grammar of the synthetic flowers: sentence frames, word choices, and the swap.

A caption is a :class:`Caption` record: a sentence *frame* (an int id, the ``template`` column)
plus the surface choices made for it (a leading phrase, the noun synonyms, an optional adjective,
the colour word used for each colour, casing, end punctuation). :func:`render` turns a record
into text; the attributes a caption states are the record's own slots, never parsed back out of
the text. The word-order swap (:func:`swap`) exchanges the petal and stem colour *words* of the
same record, so a caption and its swap hold exactly the same words in another order.

Everything here is data (the tables below) expanded by small rules: frames are built from
petal-first and stem-first phrase tables, both clause orders, relative clauses, lists and
full sentences. The first 12 frames are the project's original templates, word for word in their
canonical form (``t2i.data.templates``), so old ids keep their meaning.

Words the ``novel_wording`` split uses and training never sees: ``NOVEL_COLOR_WORDS`` (one
synonym per colour) and ``NOVEL_NOUNS``; sentence frames are held out by
``t2i.data.synthetic.novel_frames``.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any

import numpy as np

from t2i.data.flowers import COLORS, PETAL_COUNTS, PETAL_SHAPES

NUMBER_WORDS: dict[int, str] = {3: "three", 5: "five", 8: "eight"}
assert set(NUMBER_WORDS) == set(PETAL_COUNTS)

# Attribute slot in a frame -> caption table column.
SLOTS: dict[str, str] = {
    "petal": "petal_color",
    "stem": "stem_color",
    "center": "center_color",
    "count": "petal_count",
    "shape": "petal_shape",
}
COLOR_SLOTS = ("petal", "stem", "center")

# Every colour word names one palette colour: the judge reads palette colours, so a synonym must
# not be ambiguous between two of them. The first word is the canonical one.
COLOR_WORDS: dict[str, tuple[str, ...]] = {
    "red": ("red", "scarlet"),
    "orange": ("orange", "amber"),
    "yellow": ("yellow", "golden"),
    "green": ("green", "leafy green"),
    "cyan": ("cyan", "turquoise"),
    "blue": ("blue", "navy"),
    "purple": ("purple", "plum"),
    "pink": ("pink", "rose"),
    "white": ("white", "ivory"),
    "brown": ("brown", "chocolate"),
}
# Never in training: the novel_wording split's unseen synonyms.
NOVEL_COLOR_WORDS: dict[str, str] = {
    "red": "crimson", "orange": "tangerine", "yellow": "lemon", "green": "emerald",
    "cyan": "aqua", "blue": "cobalt", "purple": "violet", "pink": "fuchsia",
    "white": "snowy", "brown": "chestnut",
}
assert set(COLOR_WORDS) == set(COLORS) == set(NOVEL_COLOR_WORDS)
SHAPE_WORDS: dict[str, tuple[str, ...]] = {"round": ("round", "rounded"), "pointed": ("pointed", "spiky")}
assert set(SHAPE_WORDS) == set(PETAL_SHAPES)

# Noun nonterminals: {FLOWER} etc. The first word is the canonical one.
NOUNS: dict[str, tuple[str, ...]] = {
    "FLOWER": ("flower", "bloom"),
    "PETALS": ("petals",),
    "STEM": ("stem", "stalk"),
    "CENTER": ("center", "centre", "middle"),
}
NOVEL_NOUNS: dict[str, str] = {"FLOWER": "blossom", "CENTER": "heart"}
ADJECTIVES: tuple[str, ...] = ("", "", "", "small ", "single ", "pretty ", "lovely ", "little ")

# Leading phrases that state no attribute. Noun-phrase frames take ones that end in "of"/"is";
# full sentences take ones that end in a comma.
NP_LEADS: tuple[str, ...] = (
    "", "", "", "a picture of ", "a photo of ", "an image of ", "here is ", "this is ",
    "there is ", "i see ", "a drawing of ", "look at ",
)
CLAUSE_LEADS: tuple[str, ...] = ("", "", "", "in this picture, ", "here, ", "look: ", "in the image, ", "see how ")

# --- frames: noun phrases, petal colour first -----------------------------------------------
_PETAL_HEADS = (
    "a {ADJ}{petal} {FLOWER}",
    "a {ADJ}{FLOWER} with {petal} {PETALS}",
    "a {ADJ}{FLOWER} whose {PETALS} are {petal}",
    "{petal} {PETALS}",
    "a {ADJ}{FLOWER} in {petal}",
    "a {ADJ}{FLOWER} that has {petal} {PETALS}",
    "a {ADJ}{FLOWER} with {PETALS} coloured {petal}",
)
_STEM_TAILS = (
    " with a {stem} {STEM}",
    " on a {stem} {STEM}",
    " atop a {stem} {STEM}",
    " and a {stem} {STEM}",
    " on a {STEM} that is {stem}",
    " growing from a {stem} {STEM}",
    ", its {STEM} {stem}",
    " above a {STEM} coloured {stem}",
)
# --- frames: noun phrases, stem colour first ------------------------------------------------
_STEM_HEADS = (
    "a {stem} {STEM} {verb} a {ADJ}{petal} {FLOWER}",
    "a {stem} {STEM} {verb} {petal} {PETALS}",
    "a {STEM} that is {stem}, {verb} a {ADJ}{FLOWER} with {petal} {PETALS}",
)
_STEM_VERBS = ("holding", "topped with", "bearing", "ending in", "supporting")
# --- frames: full sentences, either clause order ------------------------------------------------
_PETAL_CLAUSES = ("the {PETALS} are {petal}", "its {PETALS} are {petal}", "the {FLOWER} is {petal}")
_STEM_CLAUSES = ("the {STEM} is {stem}", "its {STEM} is {stem}")
_JOINS = (" and ", ", ", "; ", " while ", " but ")
_SENTENCES = (
    "a {stem} {STEM} holds a {ADJ}{petal} {FLOWER}",
    "a {stem} {STEM} supports {petal} {PETALS}",
    "a {stem} {STEM} carries a {ADJ}{FLOWER} with {petal} {PETALS}",
    "{petal} {PETALS} sit on a {stem} {STEM}",
    "{petal} {PETALS} grow from a {stem} {STEM}",
    "{petal} {PETALS} crown a {stem} {STEM}",
    "on a {stem} {STEM} sits a {ADJ}{FLOWER} with {petal} {PETALS}",
    "this {ADJ}{FLOWER} has {petal} {PETALS} and a {stem} {STEM}",
    "this {ADJ}{FLOWER} has a {stem} {STEM} and {petal} {PETALS}",
    "this {ADJ}{FLOWER} shows {petal} {PETALS} on a {stem} {STEM}",
    "the {FLOWER} has {petal} {PETALS}; the {STEM} is {stem}",
    "the {STEM} is {stem}, and on it blooms a {petal} {FLOWER}",
    "a {ADJ}{petal} {FLOWER} is held up by a {stem} {STEM}",
    "a {ADJ}{petal} {FLOWER} stands on a {stem} {STEM}",
    "{petal} on top, {stem} below",
    "{stem} below, {petal} on top",
    "petals: {petal}. stem: {stem}",
    "stem: {stem}. petals: {petal}",
    "there is a {stem} {STEM} under the {petal} {PETALS}",
    "the {petal} {PETALS} rest on a {stem} {STEM}",
    "the {STEM}, which is {stem}, holds {petal} {PETALS}",
    "the {PETALS}, which are {petal}, sit on a {stem} {STEM}",
)
_SENTENCE_NPS = (  # noun phrases and lists that are not built from the tables above
    "a {ADJ}{FLOWER} whose {PETALS} are {petal} and whose {STEM} is {stem}",
    "a {ADJ}{FLOWER} whose {STEM} is {stem} and whose {PETALS} are {petal}",
    "{petal} {PETALS}, {stem} {STEM}",
    "{stem} {STEM}, {petal} {PETALS}",
    "{petal} {PETALS} and a {stem} {STEM}, nothing else",
    "a {stem}-stemmed {ADJ}{petal} {FLOWER}",
    "a {ADJ}{stem}-stemmed {FLOWER} with {petal} {PETALS}",
)
# --- frames that also state the centre, the petal count or the petal shape --------------------
_RICH_NPS = (
    "{petal} {PETALS} around a {center} {CENTER} above a {stem} {STEM}",
    "a {FLOWER} with {count} {shape} {petal} {PETALS} on a {stem} {STEM}",
    "a {stem} {STEM} holding a {petal} {FLOWER} with a {center} {CENTER}",
    "a {center} {CENTER} surrounded by {petal} {PETALS}, on a {stem} {STEM}",
    "{count} {shape} {PETALS}, all {petal}, on a {stem} {STEM}",
    "a {stem} {STEM} with {count} {petal} {PETALS} on top",
    "a {ADJ}{FLOWER} with {shape} {petal} {PETALS} and a {stem} {STEM}",
    "a {FLOWER} with {count} {petal} {PETALS} and a {center} {CENTER} on a {stem} {STEM}",
    "{shape} {petal} {PETALS} on a {stem} {STEM}",
)
_RICH_SENTENCES = (
    "the {PETALS} are {petal}, the {CENTER} is {center} and the {STEM} is {stem}",
    "{count} {petal} {PETALS} grow from a {stem} {STEM}",
    "the {STEM} is {stem}, the {PETALS} are {petal} and the {CENTER} is {center}",
    "this {FLOWER} has {count} {petal} {PETALS} and a {stem} {STEM}",
)
# The project's original 12 templates (t2i.data.templates), word for word in canonical form.
LEGACY = (
    "a {ADJ}{petal} {FLOWER} with a {stem} {STEM}",
    "the {STEM} is {stem} and the {PETALS} are {petal}",
    "a {stem} {STEM} holds a {ADJ}{petal} {FLOWER}",
    "this {ADJ}{FLOWER} has {petal} {PETALS} and a {stem} {STEM}",
    "on a {stem} {STEM} sits a {ADJ}{FLOWER} with {petal} {PETALS}",
    "this {stem}-stemmed {FLOWER} has {petal} {PETALS}",
    "a {stem} {STEM} and {petal} {PETALS}",
    "a {petal} {FLOWER} with a {center} {CENTER} on a {stem} {STEM}",
    "the {PETALS} are {petal}, the {CENTER} is {center} and the {STEM} is {stem}",
    "{petal} {PETALS} around a {center} {CENTER} above a {stem} {STEM}",
    "{count} {petal} {PETALS} grow from a {stem} {STEM}",
    "a {FLOWER} with {count} {shape} {petal} {PETALS} on a {stem} {STEM}",
)

_SLOT_RE = re.compile(r"\{(\w+)\}")
_ARTICLE_RE = re.compile(r"\b([Aa])n? (?=(\w))")


def _expand() -> tuple[tuple[str, bool], ...]:
    """Every frame as (text, is_noun_phrase), legacy first, no duplicates, a fixed order."""
    nps = [h + t for h, t in itertools.product(_PETAL_HEADS, _STEM_TAILS)]
    nps += [h.replace("{verb}", v) for h, v in itertools.product(_STEM_HEADS, _STEM_VERBS)]
    nps += list(_SENTENCE_NPS) + list(_RICH_NPS)
    clauses = [p + j + s for p, s, j in itertools.product(_PETAL_CLAUSES, _STEM_CLAUSES, _JOINS)]
    clauses += [s + j + p for p, s, j in itertools.product(_PETAL_CLAUSES, _STEM_CLAUSES, _JOINS)]
    out: dict[str, bool] = {}
    legacy_np = {0, 6, 7, 9, 11}  # legacy frames that read as a noun phrase
    for i, text in enumerate(LEGACY):
        out[text] = i in legacy_np
    for text in nps:
        out.setdefault(text, True)
    for text in clauses + list(_SENTENCES) + list(_RICH_SENTENCES):
        out.setdefault(text, False)
    return tuple(out.items())


@dataclass(frozen=True)
class Frame:
    text: str
    noun_phrase: bool  # takes NP_LEADS ("a picture of ..."), else CLAUSE_LEADS

    @cached_property
    def slots(self) -> tuple[str, ...]:
        return tuple(s for s in _SLOT_RE.findall(self.text) if s in SLOTS)

    @cached_property
    def mentions(self) -> tuple[str, ...]:
        """Caption table columns this frame states, in table order (as the old templates')."""
        return tuple(col for slot, col in SLOTS.items() if slot in self.slots)


FRAMES: tuple[Frame, ...] = tuple(Frame(t, np_) for t, np_ in _expand())
assert all({"petal", "stem"} <= set(f.slots) for f in FRAMES)
# Distinct even without their optional adjective: canonical renderings must tell frames apart.
assert len({f.text.replace("{ADJ}", "") for f in FRAMES}) == len(FRAMES)


@dataclass(frozen=True)
class Caption:
    """One caption as the grammar made it: render it with :func:`render`."""

    frame: int
    words: tuple[tuple[str, str], ...]  # (slot, word) for every attribute slot, incl. nouns/ADJ
    lead: str = ""
    capital: bool = False
    punct: str = ""

    def word(self, slot: str) -> str:
        return dict(self.words)[slot]


def fix_articles(text: str) -> str:
    """"a orange" -> "an orange": frames are written with "a" throughout."""
    return _ARTICLE_RE.sub(lambda m: m.group(1) + ("n " if m.group(2)[0] in "aeiou" else " "), text)


def render(c: Caption) -> str:
    text = fix_articles(c.lead + FRAMES[c.frame].text.format(**dict(c.words)))
    if c.capital:
        text = text[0].upper() + text[1:]
    return text + c.punct


def swap(c: Caption) -> Caption:
    """The same caption with the petal and stem colour words exchanged (the word-order test)."""
    w = dict(c.words)
    w["petal"], w["stem"] = w["stem"], w["petal"]
    return replace(c, words=tuple(w.items()))


def canonical(frame: int, attrs: dict[str, Any]) -> Caption:
    """Frame ``frame`` with canonical words, no lead, lower case: the old templates' rendering."""
    words = {k: v[0] for k, v in NOUNS.items()} | {"ADJ": ""}
    for slot in FRAMES[frame].slots:
        words[slot] = _attribute_word(slot, attrs[SLOTS[slot]], 0, novel=False)
    return Caption(frame, tuple(words.items()))


def _attribute_word(slot: str, value: Any, choice: int, novel: bool) -> str:
    if slot == "count":
        return NUMBER_WORDS[int(value)]
    if slot == "shape":
        words = SHAPE_WORDS[value]
        return words[choice % len(words)]
    if novel:
        return NOVEL_COLOR_WORDS[value]
    words = COLOR_WORDS[value]
    return words[choice % len(words)]


def sample(frame: int, attrs: dict[str, Any], rng: np.random.Generator, novel_words: bool = False) -> Caption:
    """A caption of ``frame`` stating ``attrs``; ``novel_words``: use words training never sees.

    Colour words are canonical three times in four; with ``novel_words`` at least one colour
    slot uses its held-out synonym (or the flower/centre its held-out noun).
    """
    f = FRAMES[frame]
    words: dict[str, str] = {k: v[int(rng.integers(len(v)))] for k, v in NOUNS.items()}
    words["ADJ"] = ADJECTIVES[int(rng.integers(len(ADJECTIVES)))]
    novel_slot = None
    if novel_words:
        options = [s for s in f.slots if s in COLOR_SLOTS] + [n for n in NOVEL_NOUNS if "{" + n + "}" in f.text]
        novel_slot = options[int(rng.integers(len(options)))]
    for slot in f.slots:
        choice = 0 if rng.random() < 0.75 else int(rng.integers(1, 4))
        words[slot] = _attribute_word(slot, attrs[SLOTS[slot]], choice, novel=slot == novel_slot)
    if novel_slot in NOVEL_NOUNS:
        words[novel_slot] = NOVEL_NOUNS[novel_slot]
    leads = NP_LEADS if f.noun_phrase else CLAUSE_LEADS
    return Caption(
        frame=frame,
        words=tuple(words.items()),
        lead=leads[int(rng.integers(len(leads)))],
        capital=bool(rng.random() < 0.4),
        punct=("", "", ".", ".", "!")[int(rng.integers(5))],
    )


def uses_novel_words(c: Caption) -> bool:
    w = dict(c.words)
    return any(w.get(s) in NOVEL_COLOR_WORDS.values() for s in COLOR_SLOTS) or any(
        w.get(n) == word for n, word in NOVEL_NOUNS.items()
    )


def structure(c: Caption) -> str:
    """The caption with its attribute words abstracted to slot names: its sentence structure."""
    w = dict(c.words) | {s: "<" + s + ">" for s in FRAMES[c.frame].slots}
    return render(replace(c, words=tuple(w.items())))


def frame_text(frame: int) -> str:
    """A frame's text for reports: "a {petal} flower with a {stem} stem"."""
    f = FRAMES[frame]
    return f.text.format(**{k: v[0] for k, v in NOUNS.items()}, ADJ="", **{s: "{" + s + "}" for s in SLOTS})
