"""The report's plots, as plotly figures (every trace SVG-rendered, so a plot is readable without WebGL)."""

from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..engine.space import CategoricalDistribution
from ..results import TrialRecord
from ..spec import render_value
from ..trials import TrialState
from .data import MAX_CURVES, MAX_POINTS, MAX_SLICES, ReportData, finite, unit_grid, unit_matrix

BEST = "#d62728"
POINT = "#1f77b4"
PRUNED = "#7f7f7f"
LAYOUT = dict(template="plotly_white", margin=dict(l=60, r=20, t=50, b=50), height=420)


def _label(v: object) -> str:
    return render_value(v) if isinstance(v, (str, int, float, bool)) else str(v)


def _hover(data: ReportData, records: list[TrialRecord]) -> list[str]:
    return [f"#{r.number} " + " ".join(f"{k}={_label(v)}" for k, v in r.params.items())[:300] for r in records]


def _log_ticks(lo: float, hi: float) -> list[float]:
    """log10 positions of 1-2-5 ticks in [lo, hi] (decades only when those are many), the ends when none fit."""
    for mantissas in ((1, 2, 5), (1,)):
        ticks = [math.log10(m) + k for k in range(math.floor(lo), math.ceil(hi) + 1) for m in mantissas
                 if lo - 1e-9 <= math.log10(m) + k <= hi + 1e-9]
        if len(ticks) <= 10:
            break
    return ticks if len(ticks) >= 2 else [lo, hi]


def history(data: ReportData) -> go.Figure:
    spec = data.results.spec
    scored = data.scored
    fig = go.Figure()
    best_x: list[int] = []
    best_y: list[float] = []
    current: float | None = None
    infeasible = [r for r in scored if data.infeasible(r)]
    if infeasible:  # the best so far is over feasible trials; infeasible ones are drawn apart
        scored = [r for r in scored if not data.infeasible(r)]
    for r in scored:  # best so far over every trial, drawn only where it changes
        v = data.value(r)
        assert v is not None
        if current is None or spec.objective.better(v, current):
            current = v
            best_x.append(r.number)
            best_y.append(v)
    if scored and best_x[-1] != scored[-1].number:
        best_x.append(scored[-1].number)
        best_y.append(best_y[-1])
    if len(best_x) > MAX_POINTS:
        idx = np.unique(np.linspace(0, len(best_x) - 1, MAX_POINTS).round().astype(int))
        best_x, best_y = [best_x[i] for i in idx], [best_y[i] for i in idx]
    shown = data.sample(scored, MAX_POINTS, "optimization history")
    fig.add_trace(go.Scatter(x=[r.number for r in shown], y=[data.value(r) for r in shown], mode="markers",
                             name="succeeded", marker=dict(color=POINT, size=6, opacity=0.7),
                             text=_hover(data, shown), hoverinfo="text+y"))
    if infeasible:
        infeasible = data.sample(infeasible, MAX_POINTS, "optimization history (infeasible)")
        fig.add_trace(go.Scatter(x=[r.number for r in infeasible], y=[data.value(r) for r in infeasible],
                                 mode="markers", name="infeasible (a constraint does not hold)",
                                 marker=dict(color=PRUNED, symbol="circle-open", size=7),
                                 text=_hover(data, infeasible), hoverinfo="text+y"))
    pruned = [r for r in data.results.trials if r.state in (TrialState.PRUNED, TrialState.PAUSED) and r.trial.curve]
    pruned = data.sample(pruned, MAX_POINTS, "optimization history (pruned)")
    if pruned:
        paused = any(r.state is TrialState.PAUSED for r in pruned)
        fig.add_trace(go.Scatter(x=[r.number for r in pruned], y=[r.trial.curve[-1][1] for r in pruned],
                                 mode="markers", name="paused at a rung" if paused else "pruned (last report)",
                                 marker=dict(color=PRUNED, symbol="x", size=6), text=_hover(data, pruned),
                                 hoverinfo="text+y"))
    fig.add_trace(go.Scatter(x=best_x, y=best_y, mode="lines", line=dict(color=BEST, shape="hv", width=2),
                             name="best so far"))
    fig.update_layout(title="Optimization history", xaxis_title="trial", yaxis_title=data.metric, **LAYOUT)
    return fig


def pareto(data: ReportData) -> go.Figure | None:
    """With several objectives: the first two objectives of the succeeded trials (at most MAX_POINTS, the front
    always drawn) with the Pareto front marked and joined in order of the first objective."""
    spec = data.results.spec
    objectives = spec.objective_list
    if len(objectives) < 2:
        return None
    front = data.results.front
    members = {id(r) for r in front}
    a, b = objectives[0], objectives[1]
    done = [r for r in data.scored if r.trial.objective_values(objectives) is not None and id(r) not in members]
    rest = data.sample(done, max(MAX_POINTS - len(front), 0), "Pareto plot")
    fig = go.Figure()
    # with constraints, infeasible trials are drawn apart (the front holds feasible trials only)
    for group, label, marker in (
            ([r for r in rest if not data.infeasible(r)], "trials", dict(color=POINT, size=7, opacity=0.6)),
            ([r for r in rest if data.infeasible(r)], "infeasible (a constraint does not hold)",
             dict(color=PRUNED, symbol="circle-open", size=8))):
        if group:
            fig.add_trace(go.Scatter(
                x=[r.trial.metrics[a.metric] for r in group], y=[r.trial.metrics[b.metric] for r in group],
                mode="markers", name=label, marker=marker,
                text=_hover(data, group), hovertemplate="%{text}<extra></extra>"))
    line = sorted(front, key=lambda r: (r.trial.metrics[a.metric], r.trial.metrics[b.metric]))
    fig.add_trace(go.Scatter(
        x=[r.trial.metrics[a.metric] for r in line], y=[r.trial.metrics[b.metric] for r in line],
        mode="lines+markers", name=f"Pareto front ({len(front)})", line=dict(color=BEST),
        marker=dict(color=BEST, size=9), text=_hover(data, line), hovertemplate="%{text}<extra></extra>"))
    more = f" (the first two of {len(objectives)} objectives)" if len(objectives) > 2 else ""
    fig.update_layout(title=f"Pareto front: {a.metric} ({a.goal}) and {b.metric} ({b.goal}){more}",
                      xaxis_title=a.metric, yaxis_title=b.metric, **LAYOUT)
    return fig


def slices(data: ReportData) -> go.Figure:
    dims = data.space.dims
    order = data.order[:MAX_SLICES]
    if len(dims) > MAX_SLICES:
        data.notes.append(f"slice plots: the {MAX_SLICES} most important of {len(dims)} parameters")
    cols = min(3, len(order))
    rows = math.ceil(len(order) / cols)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=[dims[j][0] for j in order],
                        horizontal_spacing=0.08, vertical_spacing=min(0.12, 0.3 / max(rows - 1, 1)))
    shown = data.sample(data.scored, MAX_POINTS, "slice plots")
    ys = [data.value(r) for r in shown]
    for k, j in enumerate(order):
        name, dist = dims[j]
        row, col = k // cols + 1, k % cols + 1
        here = [r for r in shown if name in r.params]  # a conditional parameter: the trials where it was active
        ys_here = ys if len(here) == len(shown) else [data.value(r) for r in here]
        if isinstance(dist, CategoricalDistribution):
            xs: list[object] = [_label(r.params[name]) for r in here]
        else:
            xs = [r.params[name] for r in here]
        fig.add_trace(go.Scatter(x=xs, y=ys_here, mode="markers", showlegend=False, name=name,
                                 marker=dict(color=[r.number for r in here],
                                             colorscale=[[0, "#9ecae1"], [1, "#08306b"]], size=6,
                                             line=dict(width=0.5, color="#555")),
                                 text=_hover(data, here), hoverinfo="text+y"), row=row, col=col)
        if isinstance(dist, CategoricalDistribution):
            fig.update_xaxes(type="category", categoryorder="array",
                             categoryarray=[_label(c) for c in dist.choices], row=row, col=col)
        elif dist.log:
            fig.update_xaxes(type="log", row=row, col=col)
        if col == 1:
            fig.update_yaxes(title_text=data.metric, row=row, col=col)
    layout = dict(LAYOUT, height=max(320, 300 * rows))
    fig.update_layout(title="Slices: the objective against each parameter (colour: trial number)", **layout)
    return fig


def parallel(data: ReportData) -> go.Figure:
    shown = data.sample(data.scored, MAX_POINTS, "parallel coordinates")
    dims: list[dict[str, object]] = []
    for j in data.order[:MAX_SLICES * 2]:
        name, dist = data.space.dims[j]
        # A conditional parameter's axis has no value (NaN) for the trials where it was inactive.
        if isinstance(dist, CategoricalDistribution):
            labels = [_label(c) for c in dist.choices]
            dims.append(dict(label=name, values=[labels.index(_label(r.params[name])) if name in r.params
                                                 else math.nan for r in shown],
                             tickvals=list(range(len(labels))), ticktext=labels))
        elif dist.log:
            vals = [math.log10(float(r.params[name])) if name in r.params else math.nan for r in shown]
            lo, hi = math.log10(float(dist.low)), math.log10(float(dist.high))
            ticks = _log_ticks(lo, hi)
            dims.append(dict(label=f"{name} (log)", values=vals, range=[lo, hi], tickvals=ticks,
                             ticktext=[f"{10 ** t:g}" for t in ticks]))
        else:
            dims.append(dict(label=name, values=[float(r.params[name]) if name in r.params else math.nan
                                                 for r in shown],
                             range=[float(dist.low), float(dist.high)]))
    ys = [data.value(r) for r in shown]
    dims.append(dict(label=data.metric, values=ys))
    fig = go.Figure(go.Parcoords(dimensions=dims, line=dict(color=ys, colorscale="Viridis", showscale=True,
                                                            reversescale=data.results.spec.objective.goal
                                                            == "minimize")))
    fig.update_layout(title="Parallel coordinates (most important parameters first)",
                      **dict(LAYOUT, margin=dict(l=80, r=80, t=90, b=40)))
    return fig


def contour(data: ReportData, forest_predict: object) -> go.Figure | None:
    """The forest's prediction over the two most important parameters, the others at the best trial's values."""
    if len(data.order) < 2 or data.results.best is None or forest_predict is None:
        return None
    space = data.space
    jx, jy = data.order[0], data.order[1]
    gx, gy = unit_grid(space, jx), unit_grid(space, jy)
    base = unit_matrix(space, [data.results.best.params])[0]
    grid = np.repeat(base[None, :], len(gx) * len(gy), axis=0)
    grid[:, jx] = np.tile(gx, len(gy))
    grid[:, jy] = np.repeat(gy, len(gx))
    loss = forest_predict(grid).reshape(len(gy), len(gx))  # type: ignore[operator]
    z = loss if data.results.spec.objective.goal == "minimize" else -loss

    def axis(j: int, g: np.ndarray) -> tuple[list[object], dict[str, object]]:
        name, dist = space.dims[j]
        vals: list[object] = [dist.from_unit(float(u)) for u in g]
        if isinstance(dist, CategoricalDistribution):
            return [_label(v) for v in vals], dict(type="category", title=name)
        return vals, dict(type="log" if dist.log else "linear", title=name)

    xs, xaxis = axis(jx, gx)
    ys, yaxis = axis(jy, gy)
    fig = go.Figure(go.Heatmap(x=xs, y=ys, z=z, colorscale="Viridis",
                               reversescale=data.results.spec.objective.goal == "minimize",
                               colorbar=dict(title=data.metric)))
    shown = [r for r in data.sample(data.scored, MAX_POINTS, "contour plot")
             if space.dims[jx][0] in r.params and space.dims[jy][0] in r.params]
    px = [_label(r.params[space.dims[jx][0]]) if xaxis["type"] == "category" else r.params[space.dims[jx][0]]
          for r in shown]
    py = [_label(r.params[space.dims[jy][0]]) if yaxis["type"] == "category" else r.params[space.dims[jy][0]]
          for r in shown]
    fig.add_trace(go.Scatter(x=px, y=py, mode="markers", name="trials", text=_hover(data, shown),
                             marker=dict(color="white", size=6, line=dict(color="black", width=1))))
    fig.update_layout(title=f"{space.dims[jx][0]} × {space.dims[jy][0]}: the forest's {data.metric} "
                            "(other parameters at the best trial's values)", xaxis=xaxis, yaxis=yaxis,
                      **LAYOUT)
    return fig


def curves(data: ReportData) -> go.Figure | None:
    with_curve = [r for r in data.results.trials if r.trial.curve]
    if not with_curve:
        return None
    shown = data.sample(with_curve, MAX_CURVES, "learning curves")
    best = data.results.best
    fig = go.Figure()
    for r in shown:
        steps = [s for s, _ in r.trial.curve]
        vals = [v for _, v in r.trial.curve]
        pruned = r.state is TrialState.PRUNED
        color = BEST if r is best else PRUNED if pruned else POINT
        fig.add_trace(go.Scatter(x=steps, y=vals, mode="lines", line=dict(color=color, width=2 if r is best else 1,
                                                                          dash="dot" if pruned else "solid"),
                                 opacity=1.0 if r is best else 0.6, name=f"#{r.number} {r.state.value}",
                                 showlegend=False, hoverinfo="name+x+y"))
    ends = [r for r in shown if r.state is TrialState.PRUNED]
    if ends:
        fig.add_trace(go.Scatter(x=[r.trial.curve[-1][0] for r in ends], y=[r.trial.curve[-1][1] for r in ends],
                                 mode="markers", name="pruned here", text=[f"#{r.number}" for r in ends],
                                 marker=dict(symbol="x", color=PRUNED, size=8)))
    fig.add_trace(go.Scatter(x=[None], y=[None], mode="lines", line=dict(color=POINT), name="completed"))
    if best is not None and best in shown:
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="lines", line=dict(color=BEST), name="best trial"))
    fig.update_layout(title="Learning curves (intermediate reports; dotted: pruned)", xaxis_title="step",
                      yaxis_title=data.metric, **LAYOUT)
    return fig


def importance(data: ReportData) -> go.Figure | None:
    imp = data.importance
    if imp is None:
        return None
    order = list(reversed(data.order))
    names = [data.space.dims[j][0] for j in order]
    fig = go.Figure(go.Bar(x=[float(imp.fractions[j]) for j in order], y=names, orientation="h",
                           error_x=dict(type="data", array=[float(imp.std[j]) for j in order], visible=True),
                           marker_color=POINT, hovertemplate="%{y}: %{x:.3f}<extra></extra>"))
    fig.update_layout(title=f"Parameter importance (fANOVA main effects, {imp.n_fit} trials)",
                      xaxis_title="fraction of the objective's variance (mean over 64 trees; bars: std)",
                      **dict(LAYOUT, height=max(260, 60 + 28 * len(names))))
    return fig


__all__ = ["contour", "curves", "finite", "history", "importance", "parallel", "slices"]
