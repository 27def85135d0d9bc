"""The word-order twin of a caption: the same words with the two colours exchanged.

"a red flower with a yellow stem" and "a yellow flower with a red stem" hold the same words; a
model that reads word order draws them differently. The page offers the twin with one click.

Captions the synthetic templates can produce go through the data side's own inverse
(``parse_caption`` -> ``swap_colors`` -> ``render_caption``), so the twin is the one the evaluation
scores. Any other wording falls back to swapping the first two different palette colour words in
the text, as whole words, keeping the rest (and the article before a colour: "an orange" ->
"a red") as written.
"""

from __future__ import annotations

import re

from t2i.data.flowers import COLORS
from t2i.data.templates import parse_caption, render_caption, swap_colors

_COLOR_RE = re.compile(r"\b(" + "|".join(map(re.escape, COLORS)) + r")\b", re.IGNORECASE)
_ARTICLE_RE = re.compile(r"\b([Aa])n? (?=(\w))")


def _fix_articles(text: str) -> str:
    return _ARTICLE_RE.sub(lambda m: m.group(1) + ("n " if m.group(2)[0].lower() in "aeiou" else " "), text)


def _swap_words(caption: str) -> str | None:
    found = list(_COLOR_RE.finditer(caption))
    if not found:
        return None
    first = found[0]
    second = next((m for m in found[1:] if m.group(1).lower() != first.group(1).lower()), None)
    if second is None:
        return None
    (a0, a1), (b0, b1) = first.span(), second.span()
    swapped = caption[:a0] + second.group(1) + caption[a1:b0] + first.group(1) + caption[b1:]
    return _fix_articles(swapped)


def swapped_caption(caption: str) -> str | None:
    """The caption with its two colours exchanged, or None when it names fewer than two."""
    caption = caption.strip()
    parsed = parse_caption(caption)
    if parsed is not None:
        template_id, attrs = parsed
        # Only a caption the template renders back word for word: the grammar also parses
        # synonyms ("bloom", "stalk"), which its render would replace with the canonical words.
        same = render_caption(template_id, attrs) == caption
        if same and attrs.get("petal_color") and attrs.get("stem_color") and attrs["petal_color"] != attrs["stem_color"]:
            return render_caption(template_id, swap_colors(attrs))
    return _swap_words(caption)
