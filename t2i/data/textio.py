"""Caption text read strictly as UTF-8: bad bytes and empty captions become skip reasons.

Nothing is guessed: a caption with undecodable bytes is dropped (and listed) rather than decoded
with replacement characters that the sentence encoder would happily embed.
"""

from __future__ import annotations

from pathlib import Path

Skip = dict[str, str]  # {"item": ..., "reason": ...}


def skip(item: str, reason: str) -> Skip:
    return {"item": item, "reason": reason}


def is_utf8(text: str) -> bool:
    """False if ``text`` came from ``surrogateescape`` decoding of invalid bytes."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def clean_caption(text: str | None, item: str) -> tuple[str | None, Skip | None]:
    """``(caption, None)`` for a usable caption, else ``(None, skip entry)``."""
    if text is None or not str(text).strip():
        return None, skip(item, "empty caption")
    text = " ".join(str(text).split())  # one line, single spaces: captions are sentences
    if not is_utf8(text):
        return None, skip(item, "caption is not valid UTF-8")
    return text, None


def read_caption_lines(path: Path, name: str) -> tuple[list[str], list[Skip], int]:
    """Captions of a one-caption-per-line file: ``(captions, skipped, lines considered)``.

    Lines are decoded one by one so a single bad line costs one caption, not the whole file.
    ``name`` is how the file appears in manifest.json (relative to the dataset root).
    """
    captions: list[str] = []
    skipped: list[Skip] = []
    lines = path.read_bytes().removeprefix(b"\xef\xbb\xbf").splitlines()
    for number, raw in enumerate(lines, start=1):
        if not raw.strip() and number == len(lines):
            continue  # a trailing blank line is formatting, not an empty caption
        caption, bad = clean_caption(raw.decode("utf-8", errors="surrogateescape"), f"{name}:{number}")
        if bad:
            skipped.append(bad)
        else:
            captions.append(caption)
    return captions, skipped, len(captions) + len(skipped)
