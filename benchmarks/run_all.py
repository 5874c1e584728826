"""The whole benchmark in one command: search quality, then suggestion latency, as one markdown report.

Usage (from the repository root)::

    python benchmarks/run_all.py --out benchmarks/results/latest.md   # the full run (under an hour on 2 cores)
    python benchmarks/run_all.py --quick                               # under a minute

The report starts with the machine (CPU, load average) so numbers can be compared with their context. The tables in
docs/benchmarks.md are copied from such a report.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for _p in (str(ROOT / "operator"), str(ROOT)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

from benchmarks import latency, quality  # noqa: E402


def machine() -> str:
    try:
        cpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        model = next((l.split(":", 1)[1].strip() for l in cpu.splitlines() if l.startswith("Model name")), "?")
    except OSError:
        model = platform.processor() or "?"
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"{model}, {os.cpu_count()} CPUs, Python {platform.python_version()}, load average {load}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--out", type=Path, help="also write the report here (and raw quality results next to it)")
    args = ap.parse_args(argv)
    start = time.perf_counter()
    parts = [f"Machine at start: {machine()}", ""]
    res = quality.run(quality.config_for(args.quick, workers=args.workers))
    parts += ["## Search quality", "", quality.report(res), "", f"Machine after quality: {machine()}", ""]
    lat = latency.run(latency.QUICK_SIZES if args.quick else latency.SIZES, quality.available(latency.OPTIMIZERS)[0])
    parts += ["## Suggestion latency", "", "Seconds per suggestion (ask + tell, median):", "", latency.table(lat), "",
              f"Machine at end: {machine()}; total wall time {time.perf_counter() - start:.0f} s"]
    text = "\n".join(parts)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
        args.out.with_suffix(".json").write_text(json.dumps(quality.to_json(res)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
