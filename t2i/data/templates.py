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

from t2i.data.flowers import COLORS, PETAL_COUNTS, PETAL_SHAPES

NUMBER_WORDS: dict[int, str] = {3: "three", 5: "five", 8: "eight"}
assert set(NUMBER_WORDS) == set(PETAL_COUNTS)

# Placeholder in the template text -> attribute name in the caption table.
FIELDS: dict[str, str] = {
    "petal": "petal_color",
    "stem": "stem_color",
    "center": "center_color",
    "count": "petal_count",
    "shape": "petal_shape",
}
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


def parse_caption(caption: str) -> tuple[int, dict[str, Any]] | None:
    """``(frame id, attrs it states)`` of a caption ``render_caption`` could produce, else None."""
    for template_id, template in enumerate(ALL_FRAMES):
        m = template.pattern.fullmatch(re.sub(r"\b([Aa])n ", r"\1 ", caption.strip()))
        if m is None:
            continue
        attrs: dict[str, Any] = {}
        for name, value in m.groupdict().items():
            if name == "count":
                value = next(n for n, w in NUMBER_WORDS.items() if w == value)
            attrs[FIELDS[name]] = value
        return template_id, attrs
    return None


def swap_colors(attrs: dict[str, Any]) -> dict[str, Any]:
    """The same attributes with petal and stem colour exchanged: the word-order test case."""
    return {**attrs, "petal_color": attrs["stem_color"], "stem_color": attrs["petal_color"]}
