"""One self-contained HTML file: plotly.js embedded once, every figure, the trial table with click-to-sort."""

from __future__ import annotations

import html
from dataclasses import dataclass

import plotly.graph_objects as go
import plotly.io as pio
from plotly.offline import get_plotlyjs

from ..results import ExperimentResults
from ..spec import MAX_FRONT_IN_STATUS, Constraint, render_value
from ..trials import TrialState
from . import figures
from .data import MAX_TABLE_ROWS, ReportData, prepare

CONFIG = {"displaylogo": False, "responsive": True}

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0 auto;max-width:1200px;padding:16px;
color:#222}
h1{font-size:1.5em;margin:.2em 0}h2{font-size:1.15em;margin:1.2em 0 .3em}
.summary{display:flex;flex-wrap:wrap;gap:8px 28px;background:#f5f7fa;padding:10px 14px;border-radius:6px}
.summary b{display:block;font-size:.8em;color:#666;font-weight:normal}
.notes{background:#fff8e1;border-left:4px solid #f0b400;padding:6px 12px;font-size:.9em}
.plot{border:1px solid #e5e5e5;border-radius:6px;margin:10px 0}
table{border-collapse:collapse;font-size:.85em;width:100%}
th,td{border-bottom:1px solid #e5e5e5;padding:3px 8px;text-align:left;white-space:nowrap}
td.msg{white-space:normal;max-width:380px;color:#555}
th{cursor:pointer;background:#f5f7fa;position:sticky;top:0;user-select:none}
th[aria-sort=ascending]::after{content:" \\25B2"}th[aria-sort=descending]::after{content:" \\25BC"}
tr.best{background:#fdecea}.Failed{color:#b00020}.Pruned{color:#777}.Canceled{color:#777}.Infeasible{color:#b06000}
"""

SORT_JS = """
document.querySelectorAll('table.sortable').forEach(function (table) {
  table.querySelectorAll('th').forEach(function (th, col) {
    th.addEventListener('click', function () {
      var asc = th.getAttribute('aria-sort') !== 'ascending';
      table.querySelectorAll('th').forEach(function (h) { h.removeAttribute('aria-sort'); });
      th.setAttribute('aria-sort', asc ? 'ascending' : 'descending');
      var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
      function key(row) {
        var cell = row.cells[col], v = cell.getAttribute('data-v');
        if (v === null) { v = cell.textContent; }
        var n = parseFloat(v);
        return (v !== '' && isFinite(n) && String(n) !== 'NaN' && /^\\s*-?[0-9.]/.test(v)) ? [0, n] : [1, v];
      }
      rows.sort(function (a, b) {
        var x = key(a), y = key(b);
        if (x[0] !== y[0]) { return x[0] - y[0]; }
        var c = x[1] < y[1] ? -1 : x[1] > y[1] ? 1 : 0;
        return asc ? c : -c;
      });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
});
"""


@dataclass
class Report:
    html: str
    figures: dict[str, go.Figure]
    """The plots by id, in page order (for ``--png``)."""
    notes: list[str]


def _fmt(v: float | None) -> str:
    return "" if v is None else f"{v:.6g}"


def _table(data: ReportData) -> str:
    res = data.results
    spec = res.spec
    params = [p.name for p in spec.parameters]
    metrics = spec.metric_names
    rows = res.trials
    if len(rows) > MAX_TABLE_ROWS:
        def rank(r: object) -> tuple[int, float]:
            v = data.value(r)  # type: ignore[arg-type]
            return (0, spec.objective.loss(v)) if v is not None else (1, 0.0)
        rows = sorted(sorted(rows, key=rank)[:MAX_TABLE_ROWS], key=lambda r: r.number)
        data.notes.append(f"trial table: the {MAX_TABLE_ROWS:,} best of {len(res.trials):,} trials "
                          "(results.csv has every trial)")
    best = res.best
    e = html.escape
    constrained = bool(spec.constraints)
    head = ["#", "state", *(["feasible"] if constrained else []), "reason", *metrics, *params, "seconds", "message"]
    out = ['<table class="sortable" id="trials"><thead><tr>', *(f"<th>{e(h)}</th>" for h in head),
           "</tr></thead><tbody>"]
    for r in rows:
        t = r.trial
        cells = [f'<td data-v="{r.number}">{r.number}</td>', f'<td class="{e(t.state.value)}">{e(t.state.value)}</td>']
        if constrained:  # yes / no for Succeeded trials; the others have no feasibility
            word = ("no" if data.infeasible(r) else "yes") if t.state is TrialState.SUCCEEDED else ""
            cells.append(f'<td class="{"Infeasible" if word == "no" else ""}">{word}</td>')
        cells.append(f"<td>{e(t.reason)}</td>")
        for m in metrics:
            v = t.metrics.get(m)
            cells.append(f'<td data-v="{"" if v is None else repr(v)}">{_fmt(v)}</td>')
        for p in params:
            pv = t.params.get(p)
            cells.append(f"<td>{'' if pv is None else e(render_value(pv))}</td>")
        d = r.duration_seconds
        cells.append(f'<td data-v="{"" if d is None else d}">{"" if d is None else f"{d:.1f}"}</td>')
        cells.append(f'<td class="msg">{e(t.message[:300])}</td>')
        cls = ' class="best"' if r is best else ""
        out.append(f"<tr{cls}>{''.join(cells)}</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _bounds(c: Constraint) -> str:
    lo = f"{c.min:g} <= " if c.min is not None else ""
    hi = f" <= {c.max:g}" if c.max is not None else ""
    return f"{lo}{c.metric}{hi}"


def _summary(data: ReportData) -> str:
    res = data.results
    spec = res.spec
    counts: dict[str, int] = {}
    for r in res.trials:
        counts[r.state.value] = counts.get(r.state.value, 0) + 1
    best = res.best
    objectives = ", ".join(f"{o.goal} {o.metric}" for o in spec.objective_list)
    items = [("objectives" if spec.multi_objective else "objective", objectives),
             ("algorithm", spec.algorithm.name),
             ("trials", f"{len(res.trials)} of {spec.max_trials}: "
                        + ", ".join(f"{n} {s.lower()}" for s, n in sorted(counts.items()))),
             *([("constraints", ", ".join(_bounds(c) for c in spec.constraints) + f"; "
                 f"{sum(data.infeasible(r) for r in res.trials)} succeeded trials infeasible")]
               if spec.constraints else []),
             ("status", "running or interrupted" if res.outcome is None else
              f"{'succeeded' if res.outcome['succeeded'] else 'failed'}: {res.outcome['reason']}")]
    if spec.multi_objective:
        front = res.front
        shown = ", ".join(f"#{r.number}" for r in front[:MAX_FRONT_IN_STATUS])
        more = f" and {len(front) - MAX_FRONT_IN_STATUS} more" if len(front) > MAX_FRONT_IN_STATUS else ""
        items.append(("Pareto front", f"{len(front)} trials: {shown}{more}" if front else "none yet"))
    if best is not None:
        items.append((f"best {spec.objective.metric}", f"{_fmt(data.value(best))} (trial #{best.number})"))
        items.append(("best parameters", " ".join(f"{k}={render_value(v)}" for k, v in best.params.items())))
    if spec.algorithm.name == "pbt" and best is not None and best.trial.lineage is not None:  # pbt's population
        from .population import summary_items

        items += summary_items(res, best.trial)
    return '<div class="summary">' + "".join(
        f"<div><b>{html.escape(k)}</b>{html.escape(v)}</div>" for k, v in items) + "</div>"


@dataclass
class Sections:
    """The parts of a report page, for the report file and for the live dashboard."""

    figures: dict[str, go.Figure]
    summary: str
    """HTML of the summary box."""
    table: str
    """HTML of the trial table."""
    importance: str
    """HTML saying why there is no importance plot ('' when there is one)."""
    notes: list[str]


def sections(results: ExperimentResults) -> Sections:
    data = prepare(results)
    data.notes[:0] = results.notes
    figs: dict[str, go.Figure] = {}
    if data.scored:
        figs["history"] = figures.history(data)
        if results.spec.multi_objective:
            figs["pareto"] = figures.pareto(data)
        figs["importance"] = figures.importance(data)
        figs["slices"] = figures.slices(data)
        figs["parallel"] = figures.parallel(data)
        figs["contour"] = figures.contour(data, getattr(data.importance, "forest", None) and
                                          data.importance.forest.predict)  # type: ignore[union-attr]
    figs["curves"] = figures.curves(data)
    figs = {k: f for k, f in figs.items() if f is not None}
    table = _table(data)
    importance_text = ""
    if data.importance is None:
        importance_text = ("<p>Parameter importance needs at least 4 succeeded trials whose objective "
                           "varies.</p>")
    return Sections(figs, _summary(data), table, importance_text, data.notes)


def build(results: ExperimentResults) -> Report:
    s = sections(results)
    figs = s.figures
    parts = []
    for fid, fig in figs.items():
        parts.append(pio.to_html(fig, full_html=False, include_plotlyjs=False, div_id=f"plot-{fid}",
                                 config=CONFIG, default_height=fig.layout.height or 420))
    title = f"kubetune: {results.name}"
    e = html.escape
    notes = "".join(f"<li>{e(n)}</li>" for n in s.notes)
    doc = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{e(title)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>{STYLE}</style>
<script type="text/javascript">{get_plotlyjs()}</script>
</head><body>
<h1>{e(title)}</h1>
<p style="color:#666;font-size:.85em">from {e(results.source)}</p>
{s.summary}
{f'<div class="notes"><ul>{notes}</ul></div>' if notes else ''}
{s.importance}
{''.join(f'<div class="plot">{p}</div>' for p in parts)}
<h2>Trials</h2>
<p style="font-size:.85em;color:#666">Click a column header to sort.</p>
{s.table}
<script>{SORT_JS}</script>
</body></html>
"""
    return Report(doc, figs, list(s.notes))

