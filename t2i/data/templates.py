"""The original 12 caption templates, kept as a compatibility layer over ``t2i.data.grammar``.

Captions now come from the grammar (``t2i.data.grammar``), whose first 12 frames are these
templates word for word. ``render_caption(frame_id, attrs)`` renders any grammar frame in its
canonical form (no leading phrase, canonical words); ``parse_caption`` inverts it for canonical
captions of any frame and returns None for everything else (grammar captions with synonyms or
leads, human text). New code should read the caption table's own columns instead: the stated
attributes (``mentions`` + attribute columns) and the word-order swap (``swap_caption``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from t2i.data.flowers import COLORS, PETAL_SHAPES
from t2i.data.grammar import NUMBER_WORDS, SLOTS

# Placeholder in the template text -> attribute name in the caption table: the grammar's slots.
FIELDS: dict[str, str] = SLOTS
_FIELD_RE = re.compile(r"\{(\w+)\}")
_ARTICLE_RE = re.compile(r"\b([Aa])n? (?=(\w))")


def _fix_articles(text: str) -> str:
    """"a orange" -> "an orange"; templates are written with "a" throughout."""
    return _ARTICLE_RE.sub(lambda m: m.group(1) + ("n " if m.group(2)[0] in "aeiou" else " "), text)


@dataclass(frozen=True)
class Template:
    text: str

    @cached_property
    def mentions(self) -> tuple[str, ...]:
        """Attribute names this template states, in table order."""
        used = {FIELDS[f] for f in _FIELD_RE.findall(self.text)}
        return tuple(a for a in FIELDS.values() if a in used)

    @cached_property
    def pattern(self) -> re.Pattern[str]:
        choices = {
            "petal": COLORS,
            "stem": COLORS,
            "center": COLORS,
            "count": tuple(NUMBER_WORDS.values()),
            "shape": PETAL_SHAPES,
        }
        parts, pos = [], 0
        for m in _FIELD_RE.finditer(self.text):
            parts.append(re.escape(self.text[pos : m.start()]))
            name = m.group(1)
            parts.append(f"(?P<{name}>{'|'.join(map(re.escape, choices[name]))})")
            pos = m.end()
        parts.append(re.escape(self.text[pos:]))
        return re.compile("".join(parts))


TEMPLATES: tuple[Template, ...] = tuple(
    Template(t)
    for t in (
        "a {petal} flower with a {stem} stem",
        "the stem is {stem} and the petals are {petal}",
        "a {stem} stem holds a {petal} flower",
        "this flower has {petal} petals and a {stem} stem",
        "on a {stem} stem sits a flower with {petal} petals",
        "this {stem}-stemmed flower has {petal} petals",
        "a {stem} stem and {petal} petals",
        "a {petal} flower with a {center} center on a {stem} stem",
        "the petals are {petal}, the center is {center} and the stem is {stem}",
        "{petal} petals around a {center} center above a {stem} stem",
        "{count} {petal} petals grow from a {stem} stem",
        "a flower with {count} {shape} {petal} petals on a {stem} stem",
    )
)


def _all_frames() -> tuple[Template, ...]:
    from t2i.data.grammar import FRAMES, frame_text

    return tuple(Template(frame_text(f)) for f in range(len(FRAMES)))


ALL_FRAMES: tuple[Template, ...] = _all_frames()  # the grammar's frames in canonical form
assert ALL_FRAMES[:len(TEMPLATES)] == TEMPLATES


def render_caption(template_id: int, attrs: dict[str, Any]) -> str:
    """Canonical caption of grammar frame ``template_id`` for ``attrs`` (keys as in ``ATTRIBUTES``)."""
    template = ALL_FRAMES[template_id]
    values = {
        "petal": attrs.get("petal_color"),
        "stem": attrs.get("stem_color"),
        "center": attrs.get("center_color"),
        "count": NUMBER_WORDS.get(int(attrs["petal_count"])) if "petal_count" in template.mentions else None,
        "shape": attrs.get("petal_shape"),
    }
    return _fix_articles(template.text.format(**values))


def _surface_patterns() -> tuple[tuple[re.Pattern[str], dict[str, dict[str, Any]]], ...]:
    """Per grammar frame, a pattern for every surface form ``grammar.sample`` can give it."""
    from t2i.data import grammar as g

    def alt(words: list[str]) -> str:  # longest first: "leafy green" before "green"
        return "|".join(re.escape(w) for w in sorted(set(words), key=len, reverse=True))

    colour = {w: c for c, ws in g.COLOR_WORDS.items() for w in ws} | {w: c for c, w in g.NOVEL_COLOR_WORDS.items()}
    values: dict[str, dict[str, Any]] = {
        "petal": colour, "stem": colour, "center": colour,
        "count": {w: n for n, w in g.NUMBER_WORDS.items()},
        "shape": {w: s for s, ws in g.SHAPE_WORDS.items() for w in ws},
    }
    nouns = {k: list(v) + ([g.NOVEL_NOUNS[k]] if k in g.NOVEL_NOUNS else []) for k, v in g.NOUNS.items()}
    fills = {k: f"(?:{alt(v)})" for k, v in nouns.items()}
    fills["ADJ"] = f"(?:{alt([a for a in g.ADJECTIVES if a])})?"
    leads = [_one_article(lead) for lead in g.NP_LEADS + g.CLAUSE_LEADS if lead]
    out = []
    for frame in g.FRAMES:
        parts, pos = [f"(?:{alt(leads)})?"], 0
        text = _one_article(frame.text)
        for m in _FIELD_RE.finditer(text):
            parts.append(re.escape(text[pos:m.start()]))
            name = m.group(1)
            parts.append(fills[name] if name in fills else f"(?P<{name}>{alt(list(values[name]))})")
            pos = m.end()
        parts.append(re.escape(text[pos:]) + "[.!]?")
        out.append((re.compile("".join(parts), re.IGNORECASE), values))
    return tuple(out)


def _one_article(text: str) -> str:
    return re.sub(r"\b([Aa])n ", r"\1 ", text)


_SURFACE: tuple[tuple[re.Pattern[str], dict[str, dict[str, Any]]], ...] = ()


def parse_caption(caption: str) -> tuple[int, dict[str, Any]] | None:
    """``(frame id, attrs it states)`` of a caption the grammar can produce, else None.

    For consumers that hold only the text (the evaluate stage's grid marks, test oracles): the
    caption table itself records what each row states. Human text gives None.
    """
    global _SURFACE
    text = _one_article(caption.strip())
    for template_id, template in enumerate(ALL_FRAMES):  # canonical form: the common, fast case
        m = template.pattern.fullmatch(text)
        if m is not None:
            return template_id, {FIELDS[k]: _value(k, v) for k, v in m.groupdict().items()}
    if not _SURFACE:
        _SURFACE = _surface_patterns()
    for template_id, (pattern, values) in enumerate(_SURFACE):
        m = pattern.fullmatch(text)
        if m is not None:
            return template_id, {FIELDS[k]: values[k][v.lower()] for k, v in m.groupdict().items()}
    return None


def _value(name: str, word: str) -> Any:
    return next(n for n, w in NUMBER_WORDS.items() if w == word) if name == "count" else word


def swap_colors(attrs: dict[str, Any]) -> dict[str, Any]:
    """The same attributes with petal and stem colour exchanged: the word-order test case."""
    return {**attrs, "petal_color": attrs["stem_color"], "stem_color": attrs["petal_color"]}
