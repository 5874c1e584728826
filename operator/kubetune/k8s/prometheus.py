"""A few Prometheus metrics in the text exposition format, served on their own port (no extra dependency)."""

from __future__ import annotations

import threading

from aiohttp import web


class Counter:
    def __init__(self, name: str, help_: str, label: str | None = None) -> None:
        self.name, self.help, self.label = name, help_, label
        self.values: dict[str, float] = {}
        self.lock = threading.Lock()

    def inc(self, label_value: str = "", by: float = 1.0) -> None:
        with self.lock:
            self.values[label_value] = self.values.get(label_value, 0.0) + by

    def render(self) -> str:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} counter"]
        for lv, v in sorted(self.values.items()):
            labels = f'{{{self.label}="{lv}"}}' if self.label else ""
            lines.append(f"{self.name}{labels} {v:g}")
        return "\n".join(lines)


class Gauge:
    def __init__(self, name: str, help_: str) -> None:
        self.name, self.help, self.value = name, help_, 0.0

    def set(self, value: float) -> None:
        self.value = value

    def render(self) -> str:
        return f"# HELP {self.name} {self.help}\n# TYPE {self.name} gauge\n{self.name} {self.value:g}"


class Summary:
    def __init__(self, name: str, help_: str) -> None:
        self.name, self.help, self.count, self.sum = name, help_, 0, 0.0
        self.lock = threading.Lock()

    def observe(self, value: float) -> None:
        with self.lock:
            self.count += 1
            self.sum += value

    def render(self) -> str:
        return (f"# HELP {self.name} {self.help}\n# TYPE {self.name} summary\n"
                f"{self.name}_sum {self.sum:g}\n{self.name}_count {self.count}")


TRIALS_CREATED = Counter("kubetune_trials_created_total", "Trial Jobs created.")
TRIALS_FINISHED = Counter("kubetune_trials_finished_total", "Trials recorded as finished, by state.", "state")
EXPERIMENTS = Gauge("kubetune_experiments", "Experiments watched.")
RECONCILE_SECONDS = Summary("kubetune_reconcile_seconds", "Time spent in one experiment reconcile.")
ALL = [TRIALS_CREATED, TRIALS_FINISHED, EXPERIMENTS, RECONCILE_SECONDS]


def render() -> str:
    return "\n".join(m.render() for m in ALL) + "\n"


async def serve(port: int) -> web.AppRunner:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(text=render(), content_type="text/plain")

    app = web.Application()
    app.router.add_get("/metrics", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "0.0.0.0", port).start()
    return runner
