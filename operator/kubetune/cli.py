"""The ``kubetune`` command line: run, report, dashboard, validate, crd, operator; the cluster commands are in
:mod:`kubetune.cli_cluster`."""

from __future__ import annotations

import signal
from types import FrameType

# A Ctrl-C while the modules below load would interrupt pydantic's schema build, which reports it as a SchemaError
# (exit code 1). So, when Ctrl-C has its default meaning, it is only noted while they load, and `main` then returns
# 130. This is done here, where both `kubetune` (the console script imports this module) and `python -m kubetune`
# load the command line; an inherited "ignore" (a background job) is left as it is.
_interrupted: list[int] = []


def _note(signum: int, frame: FrameType | None) -> None:
    _interrupted.append(signum)


_deferred = False
if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
    try:
        signal.signal(signal.SIGINT, _note)
        _deferred = True
    except ValueError:  # imported outside the main thread, where handlers cannot be set
        pass
try:
    import argparse
    import sys
    import threading
    from pathlib import Path

    from pydantic import ValidationError

    from .validation import InvalidExperiment, Problem, load_experiment, rule_problems, schema_problems
finally:
    if _deferred:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def _cmd_validate(args: argparse.Namespace) -> int:
    status = 0
    for path in args.files:
        try:
            exp = load_experiment(path)
        except InvalidExperiment as e:
            print(e, file=sys.stderr)
            status = 1
            continue
        print(f"{path}: valid TuningExperiment {exp.metadata.name!r} "
              f"({len(exp.spec.parameters)} parameters, algorithm {exp.spec.algorithm.name}, "
              f"maxTrials {exp.spec.max_trials})")
    return status


def _cmd_crd(args: argparse.Namespace) -> int:
    from .crd import crd_yaml

    text = crd_yaml()
    if args.output:
        Path(args.output).write_text(text)
    else:
        sys.stdout.write(text)
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    # From the first line on, SIGINT/SIGTERM are only recorded (no KeyboardInterrupt that library code could
    # swallow while the file is read and the sampler built); the runner shares the list and stops at once.
    received: list[int] = []
    saved = {}
    if threading.current_thread() is threading.main_thread():  # only the main thread may set handlers
        saved = {sig: signal.signal(sig, lambda signum, frame: received.append(signum))
                 for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        code = _run(args, received)
        if received and code not in (130, 143):
            return 128 + received[0]  # interrupted before the run took over: no trial was started
        return code
    except KeyboardInterrupt:  # Ctrl-C after the run ended and the handlers were restored
        return 130
    finally:
        for sig, old in saved.items():
            signal.signal(sig, old if old is not None else signal.SIG_DFL)


def _run(args: argparse.Namespace, received: list[int]) -> int:
    from .local.progress import Progress, describe, describe_front
    from .local.runner import LocalRunner, RunRefused
    from .plan import pareto_front
    from .spec import WARM_START_ALGORITHMS

    try:
        exp = load_experiment(args.file)
    except InvalidExperiment as e:
        print(e, file=sys.stderr)
        return 2
    spec = exp.spec
    updates = {}
    if args.max_trials is not None:
        updates["max_trials"] = args.max_trials
    if args.parallel is not None:
        updates["parallel_trials"] = args.parallel
    if updates:
        spec = spec.model_copy(update=updates)
        if "max_trials" in updates and "parallel_trials" not in updates:
            spec = spec.model_copy(update={"parallel_trials": min(spec.parallel_trials, spec.max_trials)})
        problems = [p for p in rule_problems(spec)]
        if spec.max_trials < 1 or spec.parallel_trials < 1:
            problems.append(Problem("", "--max-trials and --parallel must be at least 1"))
        else:  # model_copy skips field validation: apply the schema's bounds (maxTrials <= 10000, ...)
            try:
                type(spec).model_validate(spec.model_dump(by_alias=True, exclude_none=True))
            except ValidationError as e:
                problems += schema_problems(e)
        if problems:
            print("invalid overrides:\n" + "\n".join(f"  spec.{p.path}: {p.message}" if p.path else f"  {p.message}"
                                                     for p in problems), file=sys.stderr)
            return 2
        exp = exp.model_copy(update={"spec": spec})
    out_dir = Path(args.out or Path("kubetune-runs") / exp.metadata.name)
    if args.warm_start and spec.algorithm.name not in WARM_START_ALGORITHMS:
        print(f"--warm-start applies only to algorithm {', '.join(WARM_START_ALGORITHMS)}: the others do not learn "
              "from earlier trials", file=sys.stderr)
        return 2
    progress = Progress(live=None if not args.quiet else False)
    print(f"running {exp.metadata.name}: {spec.max_trials} trials, {spec.parallel_trials} at a time, "
          f"algorithm {spec.algorithm.name}; results in {out_dir}/", file=sys.stderr)
    if received:
        return 128 + received[0]
    runner = LocalRunner(exp, out_dir, on_event=progress, fresh=args.fresh, signals=received,
                         warm_start=[Path(d) for d in args.warm_start])
    try:
        result = runner.run()
    except RunRefused as e:
        progress.close()
        print(f"cannot run: {e}", file=sys.stderr)
        return 2
    progress.close()
    outcome = result.outcome
    if result.interrupted:
        print(f"interrupted; {len(result.trials)} trials recorded in {out_dir}/results.csv; "
              f"run the same command again to continue", file=sys.stderr)
    elif outcome is not None:
        word = "succeeded" if outcome.succeeded else "failed"
        print(f"experiment {word}: {outcome.reason}: {outcome.message}", file=sys.stderr)
    if result.best is not None:
        print("best: " + describe(result.best, spec.objective.metric))
        if spec.algorithm.name == "pbt" and result.best.lineage is not None:  # the population, the best's schedule
            from .lineage import describe_population, describe_schedule, population, schedule

            print("population:\n" + "\n".join(describe_population(population(result.trials), spec.objective)))
            print("schedule of the best trial:\n" + "\n".join(
                describe_schedule(schedule({t.number: t for t in result.trials}, result.best))))
    if spec.multi_objective:
        print("\n".join(describe_front(spec, pareto_front(spec, result.trials))))
    print(f"results: {out_dir}/results.csv", file=sys.stderr)
    return result.exit_code


def _cmd_report(args: argparse.Namespace) -> int:
    from .report import build
    from .results import ResultsError, load

    try:
        results = load(args.source, kubeconfig=args.kubeconfig, context=args.context)
    except ResultsError as e:
        print(f"cannot report: {e}", file=sys.stderr)
        return 2
    report = build(results)
    out = Path(args.output or Path(args.source) / "report.html")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report.html)
    print(f"report: {out} ({len(results.trials)} trials, {len(report.figures)} plots)", file=sys.stderr)
    for note in report.notes:
        print(f"  note: {note}", file=sys.stderr)
    if args.png:
        from .report.png import PngExportError, write_pngs

        try:
            paths = write_pngs(report.figures, Path(args.png))
        except PngExportError as e:
            print(f"cannot write images: {e}", file=sys.stderr)
            return 1
        print(f"images: {', '.join(str(p) for p in paths)}", file=sys.stderr)
    return 0


def _cmd_dashboard(args: argparse.Namespace) -> int:
    from .dashboard import serve

    if not 0 <= args.port <= 65535 or not 0.2 <= args.interval <= 3600:
        print("--port must be 0..65535 and --interval 0.2..3600 seconds", file=sys.stderr)
        return 2
    return serve(args.source, address=args.address, port=args.port, interval=args.interval,
                 kubeconfig=args.kubeconfig, context=args.context)


def _cmd_operator(args: argparse.Namespace) -> int:
    from .k8s.main import run_operator

    return run_operator(
        namespaces=args.namespace,
        all_namespaces=args.all_namespaces,
        liveness=args.liveness,
        metrics_port=args.metrics_port,
        verbose=args.verbose,
        leader_election=args.leader_election,
        lease_name=args.lease_name,
        lease_namespace=args.lease_namespace,
    )


def _kubeconfig_flags(parser: argparse.ArgumentParser) -> None:
    """kubectl's flags for a ``tex/[NAMESPACE/]NAME`` source (a results directory ignores them)."""
    parser.add_argument("--kubeconfig", help="for tex/...: the kubeconfig file (default: $KUBECONFIG, else "
                                             "~/.kube/config)")
    parser.add_argument("--context", help="for tex/...: the kubeconfig context to use")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kubetune", description="Kubernetes-native hyperparameter tuning.")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run an experiment locally: trials are local processes")
    run.add_argument("file", help="a TuningExperiment YAML file")
    run.add_argument("--parallel", "-p", type=int, help="override spec.parallelTrials")
    run.add_argument("--max-trials", "-n", type=int, help="override spec.maxTrials")
    run.add_argument("--out", "-o", help="results directory (default kubetune-runs/<name>)")
    run.add_argument("--quiet", "-q", action="store_true", help="no live status line, one line per trial")
    run.add_argument("--warm-start", metavar="DIR", action="append", default=[],
                     help="also learn from the trials in this results directory of an earlier run (repeatable; "
                          "algorithms tpe and bayesian)")
    run.add_argument("--fresh", action="store_true",
                     help="discard the run recorded in the results directory instead of continuing it")
    run.set_defaults(func=_cmd_run)

    val = sub.add_parser("validate", help="check experiment files offline, with the API server's rules")
    val.add_argument("files", nargs="+")
    val.set_defaults(func=_cmd_validate)

    c = sub.add_parser("crd", help="print the CustomResourceDefinition")
    c.add_argument("--output", "-o", help="write to this file instead of stdout")
    c.set_defaults(func=_cmd_crd)

    rep = sub.add_parser("report", help="write an HTML report (plots, parameter importance, trial table)")
    rep.add_argument("source", help="a results directory written by kubetune run, or tex/[NAMESPACE/]NAME: an "
                                    "experiment on the kubeconfig context's cluster")
    rep.add_argument("--output", "-o", help="the HTML file (default SOURCE/report.html)")
    rep.add_argument("--png", metavar="DIR", help="also write each plot as a PNG image into DIR (needs Chromium)")
    _kubeconfig_flags(rep)
    rep.set_defaults(func=_cmd_report)

    dash = sub.add_parser("dashboard", help="serve the report's views on a local web page, updated as trials finish")
    dash.add_argument("source", help="a results directory (also while kubetune run writes it), or "
                                     "tex/[NAMESPACE/]NAME: an experiment on the kubeconfig context's cluster")
    dash.add_argument("--address", default="127.0.0.1", help="the address to listen on (default 127.0.0.1)")
    dash.add_argument("--port", type=int, default=8765, help="the port (default 8765; 0 = any free port)")
    dash.add_argument("--interval", type=float, default=2.0,
                      help="seconds between checks of the source for new trials (default 2)")
    _kubeconfig_flags(dash)
    dash.set_defaults(func=_cmd_dashboard)

    op = sub.add_parser("operator", help="run the operator against the current kubeconfig or in-cluster")
    ns = op.add_mutually_exclusive_group()
    ns.add_argument("--namespace", "-n", action="append", help="watch this namespace (repeatable)")
    ns.add_argument("--all-namespaces", "-A", action="store_true", help="watch every namespace (the default)")
    op.add_argument("--liveness", default="http://0.0.0.0:8080/healthz", help="kopf liveness endpoint ('' = off)")
    op.add_argument("--metrics-port", type=int, default=9090, help="Prometheus metrics port (0 = off)")
    op.add_argument("--verbose", "-v", action="store_true")
    op.add_argument("--leader-election", action=argparse.BooleanOptionalAction, default=False,
                    help="reconcile only while holding a coordination.k8s.io Lease (for more than one replica)")
    op.add_argument("--lease-name", default="", help="the Lease's name (default kubetune-operator)")
    op.add_argument("--lease-namespace", default="",
                    help="the Lease's namespace (default: $POD_NAMESPACE, else 'default')")
    op.set_defaults(func=_cmd_operator)

    from .cli_cluster import register  # submit, get, trials, best, logs, delete

    register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    if _interrupted:  # Ctrl-C while this module loaded
        _interrupted.clear()
        return 130
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:  # a Ctrl-C no command handles itself (e.g. while a command's own modules load)
        return 130


if __name__ == "__main__":
    sys.exit(main())
