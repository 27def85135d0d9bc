"""An offline HTML template for `dvc plots show`: Vega, Vega-Lite and vega-embed inlined.

DVC's default page loads the three libraries from a CDN, so without a network it renders blank
divs. Its ``--html-template`` (or ``plots.html_template`` in ``.dvc/config``) takes a page with a
``{plot_divs}`` placeholder; this module writes one with the libraries inside a ``<script>`` tag.
The bundle comes from the ``vl-convert-python`` wheel (BSD-3-Clause; Vega/Vega-Lite/vega-embed
are BSD-3-Clause too), so nothing is fetched, at build time or when the page opens.

The bundle is ~0.9 MB, too big to commit: ``make setup`` (or ``python -m t2i.dvc_plots``)
writes it to ``.dvc/tmp/`` (git-ignored by DVC), which ``.dvc/config`` names.

The template has no ``{scripts}`` placeholder on purpose: DVC fills that one with the CDN tags.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from t2i.atomic import atomic_write

DEFAULT_PATH = Path(".dvc/tmp/t2i-plots-template.html")
# DVC's vega templates declare Vega-Lite v5 specs; a v5 compiler reads them without warnings.
VEGA_LITE_VERSION = "5.21"

_PAGE = """<!DOCTYPE html>
<html>
<head>
  <meta charset="utf-8">
  {refresh_tag}
  <title>DVC plots (offline)</title>
  <!-- Vega {vega}, Vega-Lite {vega_lite}, vega-embed {embed}: inlined, no network needed -->
  <script type="text/javascript">
{bundle}
  </script>
  <style>
    body { font-family: sans-serif; margin: 12px; }
    table { border-spacing: 15px; }
    img { image-rendering: pixelated; max-width: 100%; }
  </style>
</head>
<body>
  {plot_divs}
</body>
</html>
"""


def render_template() -> str:
    """The template page as text (DVC fills ``{plot_divs}`` and ``{refresh_tag}``)."""
    try:
        import vl_convert as vlc
    except ImportError as exc:  # a clear message beats DVC's blank page
        raise RuntimeError("the offline `dvc plots` template needs vl-convert-python: "
                           "pip install vl-convert-python") from exc
    bundle = vlc.javascript_bundle(vl_version=VEGA_LITE_VERSION)
    if "</script" in bundle.lower():  # it would end the inline <script> early
        raise RuntimeError("the Vega bundle contains '</script': cannot inline it")
    # str.replace, not str.format: the page is full of CSS braces and DVC's own placeholders.
    page = _PAGE.replace("{vega}", vlc.get_vega_version()).replace("{vega_lite}", VEGA_LITE_VERSION)
    page = page.replace("{embed}", vlc.get_vega_embed_version())
    return page.replace("{bundle}", bundle)


def write_template(path: Path = DEFAULT_PATH) -> Path:
    atomic_write(path, render_template().encode("utf-8"))
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m t2i.dvc_plots", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("output", nargs="?", type=Path, default=DEFAULT_PATH, help=f"default: {DEFAULT_PATH}")
    args = ap.parse_args(argv)
    try:
        path = write_template(args.output)
    except RuntimeError as exc:
        print(f"t2i.dvc_plots: error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {path} ({path.stat().st_size // 1024} KiB): `dvc plots show` now renders offline")
    return 0


if __name__ == "__main__":
    sys.exit(main())
