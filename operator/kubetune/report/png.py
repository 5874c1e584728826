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


def write_pngs(figs: dict[str, go.Figure], directory: Path, attempts: int = 3) -> list[Path]:
    """Write each figure to ``DIRECTORY/NAME.png``; every path returned exists.

    kaleido reports a figure it failed to render (a render timeout, a browser tab that died) only in a value that
    plotly drops, so the files are checked: a missing one is rendered again, up to ``attempts`` times in all, and
    then named in a :class:`PngExportError`."""
    import plotly.io as pio

    directory.mkdir(parents=True, exist_ok=True)
    paths = {name: directory / f"{name}.png" for name in figs}
    for path in paths.values():
        path.unlink(missing_ok=True)  # an old image must not pass for a new one
    todo = list(figs)
    for _ in range(max(1, attempts)):
        try:
            pio.write_images([figs[n] for n in todo], [paths[n] for n in todo], format="png", width=WIDTH,
                             height=[int(figs[n].layout.height or HEIGHT_DEFAULT) for n in todo], scale=SCALE)
        except Exception as e:  # kaleido raises its own types (no browser found, browser failed) and RuntimeError
            raise PngExportError(f"static export needs Chromium or Chrome installed (on Debian: apt-get install "
                                 f"chromium), or BROWSER_PATH set to one: {type(e).__name__}: {str(e)[:300]}") from None
        todo = [n for n in todo if not paths[n].is_file() or paths[n].stat().st_size == 0]
        if not todo:
            return list(paths.values())
    raise PngExportError(f"the browser rendered no image for {', '.join(todo)} (tried {max(1, attempts)} times)")
