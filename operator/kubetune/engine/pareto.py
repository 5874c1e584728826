"""Pareto dominance, non-dominated sorting, hypervolume and crowding distance over loss vectors, in numpy.

Every function takes losses: an ``(n, m)`` array of finite values, one row per trial, each of the ``m`` objectives
oriented for minimization (a maximized objective is negated first). ``a`` dominates ``b`` when ``a`` is no worse in
every objective and better in at least one. Equal rows do not dominate each other: both stay on the front.

Sizes: ``m`` is at most :data:`MAX_OBJECTIVES`; ``n`` is at most the experiment's trials (``maxTrials`` bounds it).
The non-dominated sort is ``O(m n^2)`` in chunks of bounded memory; the exact hypervolume is ``O(n log n)`` for two
objectives and a recursive slicing (``O(n^(m-1) log n)``) for three and four, used on fronts of at most a few hundred
points (the front kept in status, the benchmark's fronts).
"""

from __future__ import annotations

import numpy as np

MAX_OBJECTIVES = 4
"""At most this many objectives (``spec.objectives`` has 2..4 items)."""

_CHUNK = 2**22
"""Elements of the largest ``(rows, n, m)`` comparison array built at once (32 MiB of booleans)."""


def _as_losses(losses: object) -> np.ndarray:
    y = np.asarray(losses, dtype=float)
    if y.ndim != 2:
        raise ValueError("losses must be a 2-d array (trials x objectives)")
    if not np.isfinite(y).all():
        raise ValueError("losses must be finite")
    return y


def dominates(a: np.ndarray, b: np.ndarray) -> bool:
    """True when loss vector ``a`` dominates ``b``."""
    return bool(np.all(a <= b) and np.any(a < b))


def _dominated_by_matrix(y: np.ndarray) -> np.ndarray:
    """``D[i, j]``: row ``j`` dominates row ``i`` (computed in chunks of rows)."""
    n, m = y.shape
    out = np.zeros((n, n), dtype=bool)
    rows = max(1, _CHUNK // max(n * m, 1))
    for s in range(0, n, rows):
        block = y[s:s + rows, None, :]
        le = (y[None, :, :] <= block).all(axis=2)
        lt = (y[None, :, :] < block).any(axis=2)
        out[s:s + rows] = le & lt
    return out


def nondominated_ranks(losses: object) -> np.ndarray:
    """Each row's non-domination rank: 0 for the Pareto front, 1 for the front of the rest, and so on."""
    y = _as_losses(losses)
    n = len(y)
    ranks = np.full(n, -1, dtype=int)
    if n == 0:
        return ranks
    dom = _dominated_by_matrix(y)
    count = dom.sum(axis=1)  # how many rows dominate each row
    rank = 0
    current = np.flatnonzero(count == 0)
    while len(current):
        ranks[current] = rank
        count = count - dom[:, current].sum(axis=1)
        count[ranks >= 0] = -1
        current = np.flatnonzero(count == 0)
        rank += 1
    return ranks


def front_indices(losses: object) -> np.ndarray:
    """Indexes (ascending) of the non-dominated rows."""
    y = _as_losses(losses)
    if len(y) == 0:
        return np.zeros(0, dtype=int)
    return np.flatnonzero(~_dominated_by_matrix(y).any(axis=1))


def hypervolume(losses: object, reference: object) -> float:
    """The volume dominated by the rows and bounded by ``reference`` (rows not strictly below it count nothing)."""
    y = _as_losses(losses)
    ref = np.asarray(reference, dtype=float)
    if ref.shape != (y.shape[1],):
        raise ValueError("the reference point needs one value per objective")
    y = y[(y < ref).all(axis=1)]
    if len(y) == 0:
        return 0.0
    y = y[front_indices(y)]
    return _hv(np.unique(y, axis=0), ref)


def _hv(y: np.ndarray, ref: np.ndarray) -> float:
    """Hypervolume of mutually non-dominated rows strictly below ``ref``."""
    m = y.shape[1]
    if m == 1:
        return float(ref[0] - y[:, 0].min())
    if m == 2:
        order = np.argsort(y[:, 0], kind="stable")
        x, z = y[order, 0], y[order, 1]
        best = np.minimum.accumulate(z)
        widths = np.append(x[1:], ref[0]) - x
        return float(np.sum(widths * (ref[1] - best)))
    # slice along the last objective: between consecutive values, the rows at or below the slice form an
    # (m-1)-dimensional problem
    order = np.argsort(y[:, -1], kind="stable")
    y = y[order]
    total = 0.0
    for i in range(len(y)):
        top = y[i + 1, -1] if i + 1 < len(y) else ref[-1]
        depth = top - y[i, -1]
        if depth <= 0:
            continue
        part = y[: i + 1, :-1]
        part = part[front_indices(part)]
        total += depth * _hv(part, ref[:-1])
    return total


def hypervolume_contributions(losses: object, reference: object) -> np.ndarray:
    """Each row's exclusive contribution: the hypervolume lost when it alone is left out."""
    y = _as_losses(losses)
    full = hypervolume(y, reference)
    keep = np.ones(len(y), dtype=bool)
    out = np.empty(len(y))
    for i in range(len(y)):
        keep[i] = False
        out[i] = full - hypervolume(y[keep], reference)
        keep[i] = True
    return np.maximum(out, 0.0)


def crowding_distance(losses: object) -> np.ndarray:
    """NSGA-II's crowding distance: per objective, the normalized gap between each row's neighbours, summed; the
    extremes of every objective get infinity."""
    y = _as_losses(losses)
    n, m = y.shape
    out = np.zeros(n)
    if n <= 2:
        return np.full(n, np.inf)
    for j in range(m):
        order = np.argsort(y[:, j], kind="stable")
        col = y[order, j]
        span = col[-1] - col[0]
        out[order[0]] = out[order[-1]] = np.inf
        if span > 0:
            out[order[1:-1]] += (col[2:] - col[:-2]) / span
    return out


def select_spread(losses: object, k: int) -> np.ndarray:
    """Indexes (ascending) of at most ``k`` rows chosen to spread over the front: the row with the smallest crowding
    distance is dropped, and distances computed again, until ``k`` remain (ties: the later row goes first). While
    more than ``2 k`` rows remain, the half with the smallest distances goes at once (rows of infinite distance, the
    extremes of each objective, stay), so the work is ``O(n log n log(n / k) + k^2 log k)``, not ``O(n^2 log n)``."""
    y = _as_losses(losses)
    k = max(k, 0)
    idx = np.arange(len(y))
    while len(idx) > 2 * k and k > 0:
        d = crowding_distance(y[idx])
        drop = len(idx) // 2
        order = np.lexsort((-np.arange(len(d)), d))  # smallest distance first; ties: the later row first
        order = order[~np.isinf(d[order])][:drop]
        if not len(order):
            break
        idx = np.delete(idx, order)
    while len(idx) > k:
        d = crowding_distance(y[idx])
        worst = len(d) - 1 - int(np.argmin(d[::-1]))
        idx = np.delete(idx, worst)
    return idx


def greedy_hssp(losses: object, k: int, reference: object) -> np.ndarray:
    """Greedy hypervolume subset selection: up to ``k`` row indexes, in the order chosen, each the row that adds the
    most hypervolume to the rows chosen before it (ties: the first found). Lazy: a row's gain only shrinks as rows
    are chosen, so a stale gain is an upper bound and only the top one is computed again."""
    import heapq

    y = _as_losses(losses)
    ref = np.asarray(reference, dtype=float)
    boxes = np.prod(np.clip(ref - y, 0.0, None), axis=1)
    heap = [(-float(b), i) for i, b in enumerate(boxes)]
    heapq.heapify(heap)
    chosen: list[int] = []
    while heap and len(chosen) < k:
        _, i = heapq.heappop(heap)
        gain = float(boxes[i])
        if chosen and gain > 0:
            gain -= hypervolume(np.maximum(y[i], y[chosen]), ref)
        if not heap or gain >= -heap[0][0] - 1e-15 * max(abs(heap[0][0]), 1.0):
            chosen.append(i)
        else:
            heapq.heappush(heap, (-gain, i))
    return np.array(chosen, dtype=int)


def motpe_order(losses: object, n_good: int) -> np.ndarray:
    """A ranking of the rows for a multi-objective TPE split (Optuna's MOTPE): by non-domination rank; the rank that
    the first ``n_good`` positions cut through is tie-broken by greedy hypervolume subset selection
    (:func:`greedy_hssp`, as Optuna's ``_solve_hssp``; reference point: that rank's worst value of each objective
    plus 10 % of its range there, or of its magnitude where it has no range); otherwise in row order. Returns each
    row's position in that order (0 = best)."""
    y = _as_losses(losses)
    n = len(y)
    if n == 0:
        return np.zeros(0, dtype=int)
    ranks = nondominated_ranks(y)
    key = np.arange(n, dtype=float) + n  # within a rank: row order, after any chosen row
    sizes = np.bincount(ranks)
    before = np.concatenate([[0], np.cumsum(sizes)])
    boundary = int(np.searchsorted(before, n_good, side="right")) - 1  # the rank holding position n_good
    if 0 <= boundary < len(sizes) and before[boundary] < n_good:
        members = np.flatnonzero(ranks == boundary)
        if 1 < len(members) <= _MAX_CONTRIBUTION_ROWS:
            part = y[members]
            worst, span = part.max(axis=0), np.ptp(part, axis=0)
            ref = worst + np.where(span > 0, 0.1 * span, np.maximum(0.1 * np.abs(worst), 1e-12))
            chosen = greedy_hssp(part, n_good - int(before[boundary]), ref)
            key[members[chosen]] = np.arange(len(chosen))
    keys = np.lexsort((key, ranks))
    position = np.empty(n, dtype=int)
    position[keys] = np.arange(n)
    return position


_MAX_CONTRIBUTION_ROWS = 64
"""A boundary rank of more rows than this keeps its rows in creation order (bounds the cost of the subset
selection)."""
