"""``--png DIR``: each plot as a PNG image, rendered by plotly's static export (kaleido).

kaleido (1.x) drives a Chromium-based browser that is already installed (it looks for ``chromium``,
``google-chrome`` and the like on ``PATH``, or takes ``BROWSER_PATH``); it downloads nothing unless asked to with
``kaleido.get_chrome``, which kubetune never does. On Debian: ``apt-get install chromium``.
"""

from __future__ import annotations

from pathlib import Path

import plotly.graph_objects as go

WIDTH, HEIGHT_DEFAULT, SCALE = 1100, 420, 1


class PngExportError(Exception):
    """No browser for static export, or the export failed."""


def write_pngs(figs: dict[str, go.Figure], directory: Path) -> list[Path]:
    import plotly.io as pio

    directory.mkdir(parents=True, exist_ok=True)
    paths = [directory / f"{name}.png" for name in figs]
    try:
        pio.write_images(list(figs.values()), paths, format="png", width=WIDTH,
                         height=[int(f.layout.height or HEIGHT_DEFAULT) for f in figs.values()], scale=SCALE)
    except Exception as e:  # kaleido raises its own types (no browser found, browser failed) and RuntimeError
        raise PngExportError(f"static export needs Chromium or Chrome installed (on Debian: apt-get install "
                             f"chromium), or BROWSER_PATH set to one: {type(e).__name__}: {str(e)[:300]}") from None
    return paths
