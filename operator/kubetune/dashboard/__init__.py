"""``kubetune dashboard SOURCE``: the report's views on a small local web server, updated as trials finish."""

from __future__ import annotations

from .server import DashboardServer, serve
from .state import Live, Snapshot
from .watch import ClusterWatch, LocalWatch, Watched, watch

__all__ = ["ClusterWatch", "DashboardServer", "Live", "LocalWatch", "Snapshot", "Watched", "serve", "watch"]
