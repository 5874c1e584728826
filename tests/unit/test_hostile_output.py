"""Trial output is untrusted: whatever a trial writes ends as a named trial state or a bounded, noted truncation.

Properties over arbitrary bytes, text and JSON-like documents (hypothesis) for the parsers, the observation and the
record bounds; known answers for each hostile case; and the largest record the bounds allow, measured.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kubetune.k8s.observe import ClusterView, JobSummary, PodSummary, observe_trial
from kubetune.k8s.reconciler import ClusterState, ExperimentWorker
from kubetune.k8s.store import SHARD_SIZE, record_key
from kubetune.metrics import (
    MAX_JSON_DEPTH,
    MAX_REPORT_BYTES,
    MetricsFormatError,
    Report,
    parse_annotation,
    parse_report_line,
    parse_termination_message,
    parse_termination_report,
)
from kubetune.trials import (
    MAX_CURVE_POINTS,
    MAX_MESSAGE,
    MAX_METRIC_NAME,
    MAX_METRICS,
    MAX_METRICS_BYTES,
    MAX_RECORD_BYTES,
    MAX_STEP,
    Lineage,
    Reason,
    Trial,
    TrialState,
    bound_metrics,
    clip_text,
    make_curve,
)
from kubetune.validation import load_experiment

ROOT = Path(__file__).resolve().parents[2]
CONFIGMAP_DATA_LIMIT = 1024 * 1024
"""The API server refuses a ConfigMap whose keys plus values exceed 1 MiB."""
FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def spec():
    return load_experiment(ROOT / "examples" / "digits-svm.yaml").spec  # objective accuracy, additional fit_seconds


def serialized(rec: dict[str, Any]) -> str:
    """A record exactly as the store writes it."""
    return json.dumps(rec, separators=(",", ":"))


# ------------------------------------------------------------------------------------------------ fuzzing


def json_values(max_leaves: int = 30) -> st.SearchStrategy[Any]:
    scalars = st.one_of(
        st.none(), st.booleans(),
        st.integers(), st.integers(min_value=10**300, max_value=10**320), st.integers(max_value=-(2**80)),
        st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20),
    )
    return st.recursive(scalars, lambda inner: st.one_of(
        st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=10), inner, max_size=5)), max_leaves=max_leaves)


def sdk_like() -> st.SearchStrategy[Any]:
    """Documents shaped like the SDK's annotation, with hostile values in every field."""
    metrics = st.dictionaries(st.text(max_size=140), json_values(3), max_size=8)
    step = st.one_of(st.integers(min_value=-5, max_value=2**80), st.floats(allow_nan=True), st.booleans(), st.none(),
                     st.text(max_size=3))
    point = st.one_of(st.tuples(step, metrics).map(list), json_values(4))
    return st.fixed_dictionaries(
        {"metrics": st.one_of(metrics, json_values(4))},
        optional={"seq": st.one_of(st.integers(min_value=-5, max_value=2**70), json_values(2)),
                  "curve": st.one_of(st.lists(point, max_size=8), json_values(3)),
                  "step": step, "time": json_values(2)},
    )


def documents() -> st.SearchStrategy[str | bytes]:
    as_json = st.one_of(json_values(), sdk_like()).map(lambda v: json.dumps(v))  # NaN/Infinity tokens included
    nested = st.tuples(st.integers(min_value=1, max_value=3 * MAX_JSON_DEPTH), st.sampled_from("[{")).map(
        lambda d: "".join('{"k":' if c == "{" else "[" for c in d[1] * d[0]) + "1" + "".join(
            "}" if c == "{" else "]" for c in d[1] * d[0]))
    return st.one_of(as_json, st.text(), st.binary(), nested,
                     as_json.map(lambda s: s.encode("utf-8", "surrogatepass")))


PARSERS = [parse_annotation, parse_termination_report, parse_termination_message, parse_report_line]


def check_report(r: Report | dict[str, float] | None) -> None:
    if r is None:
        return
    metrics = r if isinstance(r, dict) else r.metrics
    for name, value in metrics.items():
        assert isinstance(name, str) and 0 < len(name) <= MAX_METRIC_NAME and name.isprintable()
        assert type(value) is float and math.isfinite(value)
    if isinstance(r, Report):
        steps = [s for s, _ in r.curve]
        assert steps == sorted(set(steps))
        assert all(type(s) is int and 0 <= s < MAX_STEP for s in steps)
        assert all(values and all(type(v) is float and math.isfinite(v) for v in values.values())
                   for _, values in r.curve)
        assert type(r.seq) is int and 0 <= r.seq < 2**63
        assert all(isinstance(n, str) for n in r.notes) and len(r.notes) <= 8


@FUZZ
@given(documents())
def test_parsers_return_a_clean_report_or_raise_metrics_format_error(text: str | bytes) -> None:
    for parse in PARSERS:
        try:
            check_report(parse(text))
        except MetricsFormatError as e:
            assert str(e)


def test_parsers_refuse_deep_nesting_before_json_sees_it() -> None:
    # 100,000 levels, well over the recursion limit: refused by the pre-scan (nothing recurses).
    for text in ("[" * 100_000, "[" * 100_000 + "]" * 100_000, '{"":' * 50_000 + "1" + "}" * 50_000):
        for parse in (parse_annotation, parse_report_line):
            with pytest.raises(MetricsFormatError, match="nested deeper"):
                parse(text)
        for parse in (parse_termination_report, parse_termination_message):  # its last 4 KiB
            with pytest.raises(MetricsFormatError, match="nested deeper|not JSON"):
                parse(text)
    assert sys.getrecursionlimit() < 100_000


def test_megabytes_of_text_are_refused_unparsed() -> None:
    huge = '{"accuracy": 0.5, "pad": "' + "x" * (5 * 1024 * 1024) + '"}'
    for parse in (parse_annotation, parse_report_line):
        with pytest.raises(MetricsFormatError, match=f"more than the {MAX_REPORT_BYTES}"):
            parse(huge)
    # A termination message is read from its end, like Kubernetes does: a huge one is its last 4 KiB.
    assert parse_termination_message("x" * 5_000_000 + '\n{"accuracy": 0.5}\n') == {"accuracy": 0.5}
    with pytest.raises(MetricsFormatError, match="last line is not JSON"):
        parse_termination_message(huge)


def test_non_utf8_bytes() -> None:
    with pytest.raises(MetricsFormatError, match="not UTF-8"):
        parse_annotation(b'{"accuracy": 0.5, "n\xff": 1}')
    with pytest.raises(MetricsFormatError, match="not UTF-8"):
        parse_report_line(b'{"metrics": {"accuracy": 0.5}, "step": 1}\xc3')
    # The termination message's earlier lines do not matter.
    assert parse_termination_message(b'\xff\xfe garbage\n{"accuracy": 0.5}\n') == {"accuracy": 0.5}


@pytest.mark.parametrize("doc", [[1, 2], "accuracy", None, 0.9, True])
def test_non_objects(doc: Any) -> None:
    for parse in PARSERS:
        with pytest.raises(MetricsFormatError, match="not a JSON object"):
            parse(json.dumps(doc))


# ------------------------------------------------------------------------------------------------ record bounds


hostile_names = st.one_of(st.text(min_size=0, max_size=200), st.text(alphabet="\u00e9\U0001f600\x00", max_size=140))
hostile_values = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(min_value=-(10**400),
                                                                                        max_value=10**400),
                           st.booleans(), st.none(), st.text(max_size=3))


@FUZZ
@given(
    metrics=st.dictionaries(hostile_names, hostile_values, max_size=300),
    curve=st.lists(st.tuples(st.one_of(st.integers(min_value=-3, max_value=2**80), st.floats(allow_nan=True)),
                             hostile_values), max_size=600),
    message=st.text(max_size=3000),
    first=st.lists(hostile_names, max_size=5),
)
def test_any_trial_records_within_bounds_and_records_are_stable(metrics: dict[Any, Any], curve: list[Any],
                                                                 message: str, first: list[str]) -> None:
    params = {f"p{i}": float(i) for i in range(8)}
    trial = Trial(7, params, TrialState.SUCCEEDED, metrics=metrics, curve=curve, reason=Reason.COMPLETED,
                  message=message)
    trial.fit(first)
    rec = trial.to_record()
    text = serialized(rec)
    assert len(text) <= MAX_RECORD_BYTES
    assert text.isascii()
    assert len(rec.get("metrics", {})) <= MAX_METRICS
    assert len(serialized(rec.get("metrics", {}))) <= MAX_METRICS_BYTES
    assert len(rec.get("curve", [])) <= MAX_CURVE_POINTS
    assert len(json.dumps(rec.get("message", ""))) - 2 <= MAX_MESSAGE
    # Valid first names that fit are kept first, in order.
    kept = list(rec.get("metrics", {}))
    firsts = [n for n in dict.fromkeys(first) if n in kept]
    assert kept[: len(firsts)] == firsts
    # A stored record reads back and stores again identically (the store may rewrite a record).
    again = Trial.from_record(json.loads(text))
    assert again.to_record() == json.loads(text)


@FUZZ
@given(points=st.lists(st.tuples(st.integers(min_value=-10, max_value=2**60), st.floats()), max_size=2000))
def test_make_curve_against_a_brute_force_reading(points: list[tuple[int, float]]) -> None:
    curve = make_curve(points)
    last: dict[int, float] = {}
    for s, v in points:  # the last valid report per step
        if 0 <= s < MAX_STEP and math.isfinite(v):
            last[s] = v
    assert len(curve) == min(len(last), MAX_CURVE_POINTS)
    assert all(last[s] == v for s, v in curve)  # a kept point is the step's last report
    if last:
        assert curve[-1] == max(last.items())  # the latest step is always kept
    assert [s for s, _ in curve] == sorted({s for s, _ in curve})


def test_metrics_objective_and_additional_first_then_by_name() -> None:
    reported = {f"m{i:04d}": float(i) for i in range(3000)} | {"fit_seconds": 2.0, "accuracy": 0.9}
    kept, dropped = bound_metrics(reported, ["accuracy", "fit_seconds"])
    assert list(kept)[:2] == ["accuracy", "fit_seconds"]
    assert list(kept)[2:] == [f"m{i:04d}" for i in range(MAX_METRICS - 2)]
    assert len(kept) == MAX_METRICS and dropped == 3002 - MAX_METRICS


def test_long_and_unprintable_names_are_dropped() -> None:
    kept, dropped = bound_metrics({"a" * MAX_METRIC_NAME: 1, "b" * (MAX_METRIC_NAME + 1): 2, "": 3, "c\n": 4,
                                   "\ud800": 5, "ok": True, "big": 10**400}, [])
    assert kept == {"a" * MAX_METRIC_NAME: 1.0} and dropped == 6


def test_metric_bytes_bound_long_escaped_names() -> None:
    # 128 BMP characters escape to 6 bytes each, astral ones to 12: far fewer than 64 such metrics fit 4 KiB.
    names = [chr(0x4E00 + i) * MAX_METRIC_NAME for i in range(40)] + [chr(0x1F600 + i) * MAX_METRIC_NAME
                                                                      for i in range(40)]
    kept, dropped = bound_metrics({n: 1.0 for n in names}, [])
    assert 0 < len(kept) < 10 and dropped == 80 - len(kept)
    assert len(serialized(kept)) <= MAX_METRICS_BYTES


def test_clip_text_cuts_on_characters_within_escaped_bytes() -> None:
    for text in ["x" * 5000, "\U0001f600" * 500, "\x01" * 900, "é" * 300 + "\"\\" * 400, "ok"]:
        for limit in (128, MAX_MESSAGE):
            out = clip_text(text, limit)
            assert len(json.dumps(out)) - 2 <= limit
            assert out == text or (out.endswith("\u2026") and text.startswith(out[:-1]))
            out.encode("utf-8")  # no split surrogate pair


def largest_trial(number: int = 9_999) -> Trial:
    """A trial at every bound at once: what a hostile trial and a maximal spec can produce together."""
    # 64 parameters (the schema's maximum) with 63-character names and int64 values (CEL's int range).
    params: dict[str, Any] = {f"p{i:02d}_" + "n" * 59: -(2**63) for i in range(64)}
    objective = "a" * 63
    additional = [f"{i:02d}" + "b" * 61 for i in range(16)]
    metrics: dict[str, float] = {objective: -2.2250738585072014e-308}
    metrics |= {n: -1.7976931348623157e308 for n in additional}
    metrics |= {chr(0x4E00 + i) * MAX_METRIC_NAME: -2.2250738585072014e-308 for i in range(1000)}  # 6 bytes/char
    metrics |= {chr(0x1F600 + i) * MAX_METRIC_NAME: -2.2250738585072014e-308 for i in range(1000)}  # 12 bytes/char
    metrics |= {f"m{i:05d}" + "x" * 120: -2.2250738585072014e-308 for i in range(3000)}
    curve = [(MAX_STEP - 1 - i, -2.2250738585072014e-308) for i in range(20_000)]
    trial = Trial(number, params, TrialState.PRUNED, metrics=metrics, curve=curve, reason="R" * 500,
                  message="\x01\U0001f600" * 5000, start_time="2026-01-01T00:00:00.000000000Z" * 10,
                  completion_time="9" * 500, lineage=Lineage(2**53 - 1, 2**53 - 1, 2**53 - 1, 2**53 - 1),
                  checkpoint="/" + "\U0001f600" * 2000)  # pbt's lineage and a checkpoint path beyond their bounds
    trial.fit([objective, *additional])
    return trial


def test_the_largest_record_fits_and_fifty_fit_a_configmap_with_headroom() -> None:
    trial = largest_trial()
    record = serialized(trial.to_record())
    assert len(record) <= MAX_RECORD_BYTES, len(record)
    shard = {record_key(n): record for n in range(9_950, 9_950 + SHARD_SIZE)}
    data_size = sum(len(k.encode()) + len(v.encode()) for k, v in shard.items())
    assert data_size <= CONFIGMAP_DATA_LIMIT * 0.8, data_size  # at least 20 % headroom
    # The arithmetic of MAX_RECORD_BYTES's docstring, measured.
    assert SHARD_SIZE * (MAX_RECORD_BYTES + len(record_key(9_999))) == 819_500
    # What was kept: the objective first, the additional metrics, and a message saying what was cut.
    rec = json.loads(record)
    assert list(rec["metrics"])[0] == "a" * 63
    assert "kept " in rec["message"] and " metrics" in rec["message"]
    assert "curve" in rec["message"]
    assert rec["curve"][-1] == [MAX_STEP - 1, -2.2250738585072014e-308]  # the latest point survives thinning
    assert len(rec["params"]) == 64  # parameters are never cut
    assert rec["lineage"] == {"member": 2**53 - 1, "parent": 2**53 - 1, "start": 2**53 - 1, "end": 2**53 - 1}
    assert len(serialized(rec["checkpoint"])) - 2 <= 512  # the path is cut to its bound


def test_field_bounds_add_up_as_documented() -> None:
    worst_curve = [[MAX_STEP - 1, -2.2250738585072014e-308]] * MAX_CURVE_POINTS
    assert len(serialized(worst_curve)) == 8_801
    worst_params = {f"p{i:02d}_" + "n" * 59: -(2**63) for i in range(64)}
    assert len(serialized(worst_params)) == 64 * 87 + 1
    # Without the parameters at their bound, every other field at its bound fits without further thinning.
    trial = largest_trial()
    small = Trial(trial.number, {"x": 0.5}, trial.state, dict(trial.metrics),
                  [(MAX_STEP - 1 - i, -2.2250738585072014e-308) for i in range(MAX_CURVE_POINTS)],
                  trial.reason, trial.message[:MAX_MESSAGE], trial.start_time, trial.completion_time)
    assert small.fit() == []
    assert len(small.curve) == MAX_CURVE_POINTS
    assert len(serialized(small.to_record())) <= MAX_RECORD_BYTES


def test_fit_is_idempotent_and_notes_once() -> None:
    trial = largest_trial()
    notes = trial.truncation
    assert trial.fit() == [] and trial.truncation == notes
    rec = trial.to_record()
    assert rec == Trial.from_record(rec).to_record()
    assert rec["message"].count("kept ") == notes.count("kept ")


# ------------------------------------------------------------------------------------------------ observation


def job(**kw: Any) -> JobSummary:
    base: dict[str, Any] = dict(name="e-0001", number=1, params={"C": 1.0}, complete=True, failed=False)
    base.update(kw)
    return JobSummary(**base)


def pod(metrics_text: str | None = None, **kw: Any) -> PodSummary:
    base: dict[str, Any] = dict(name="e-0001-abc", job="e-0001", phase="Succeeded", deleting=False,
                                metrics_text=metrics_text, exit_code=0)
    base.update(kw)
    return PodSummary(**base)


def sdk(metrics: Any, **extra: Any) -> str:
    return json.dumps({"seq": 1, "metrics": metrics, **extra})


MANY = {f"m{i:04d}": i / 7 for i in range(5000)}
CASES = [
    # (annotation, termination message, state, reason, text in the message)
    (sdk({"accuracy": 0.9, **MANY}), None, "Succeeded", "Completed", "kept 64 of 5001 metrics"),
    (sdk({"accuracy": 0.9, "x" * 5000: 1.0}), None, "Succeeded", "Completed",
     "ignored 1 metrics with names longer than 128 characters"),
    (sdk({"accuracy": 0.9, "loss": float("nan")}), None, "Succeeded", "Completed",
     "ignored 1 metrics that are not finite ('loss')"),
    ('{"seq": 1, "metrics": {"accuracy": 0.9, "big": 1' + "0" * 400 + "}}", None, "Succeeded", "Completed",
     "ignored 1 metrics that are not finite ('big')"),
    (sdk({"accuracy": 0.9}, seq=2**80), None, "Succeeded", "Completed", "ignored 1 seq"),
    (sdk({"accuracy": 0.9}, curve=[[-1, {"accuracy": 1}], [2**80, {"accuracy": 1}], [1.5, {"accuracy": 1}],
                                   [True, {"accuracy": 1}], [3, {"accuracy": 0.5}]]),
     None, "Succeeded", "Completed", "ignored 4 curve points"),
    ('{"seq": 1, "metrics": {"accuracy": 0.1, "accuracy": 0.9}}', None, "Succeeded", "Completed",
     "ignored 1 duplicate keys"),
    (sdk({"accuracy": float("inf")}), None, "Failed", "InvalidMetrics",
     "kubetune.io/metrics: metric 'accuracy' is not finite"),
    ('{"seq": 1, "metrics": {"accuracy": 1' + "0" * 400 + "}}", None, "Failed", "InvalidMetrics",
     "kubetune.io/metrics: metric 'accuracy' is not finite"),
    (sdk({"accuracy": "0.9"}), None, "Failed", "InvalidMetrics", "metric 'accuracy' is not a number"),
    ("[" * 100_000 + "]" * 100_000, None, "Failed", "InvalidMetrics", "nested deeper than 8 levels"),
    ('["accuracy", 0.9]', None, "Failed", "InvalidMetrics", "kubetune.io/metrics is not a JSON object"),
    ("null", None, "Failed", "InvalidMetrics", "kubetune.io/metrics is not a JSON object"),
    ('"accuracy"', None, "Failed", "InvalidMetrics", "kubetune.io/metrics is not a JSON object"),
    ("x" * 300_000, None, "Failed", "InvalidMetrics", "more than the 262144 bytes"),
    (sdk({"loss": 1.0}), None, "Failed", "MetricsMissing", "without reporting the objective metric"),
    # The termination message completes a report that lacks a usable objective.
    (sdk({"accuracy": float("nan")}), '{"accuracy": 0.8}', "Succeeded", "Completed",
     "ignored 1 metrics that are not finite ('accuracy')"),
    (sdk({"accuracy": 0.9}), None, "Succeeded", "Completed", ""),
    (None, '{"accuracy": NaN, "fit_seconds": 2}', "Failed", "InvalidMetrics",
     "the termination message: metric 'accuracy' is not finite"),
    (None, '{"accuracy": 0.8, "f": Infinity}', "Succeeded", "Completed", "ignored 1 metrics that are not finite"),
    (None, "[" * 5000, "Failed", "InvalidMetrics", "the termination message's last line is nested deeper"),
    (None, "\x00\xff" * 10_000, "Failed", "InvalidMetrics", "the termination message's last line is not JSON"),
]


@pytest.mark.parametrize("annotation, termination, state, reason, text", CASES)
def test_hostile_outputs_end_as_named_states(spec: Any, annotation: str | None, termination: str | None,
                                             state: str, reason: str, text: str) -> None:
    obs = observe_trial(spec, job(), [pod(annotation, termination_message=termination)], None)
    assert obs.final
    trial = obs.trial
    assert (trial.state.value, trial.reason) == (state, reason), trial.message
    assert text in trial.message
    assert len(serialized(trial.to_record())) <= MAX_RECORD_BYTES
    if reason == "InvalidMetrics":
        assert trial.truncation == ""  # the failure is the news (TrialFailed), not a truncation
    if state == "Succeeded":
        assert trial.metrics["accuracy"] in (0.9, 0.8)
        assert list(trial.metrics)[0] == "accuracy"
        assert bool(trial.truncation) == bool(text)  # a truncation is flagged for the event
        assert trial.truncation in trial.message


def test_many_metrics_keep_objective_additional_then_sorted(spec: Any) -> None:
    text = sdk({**MANY, "fit_seconds": 3.0, "accuracy": 0.9})
    obs = observe_trial(spec, job(), [pod(text)], None)
    assert list(obs.trial.metrics) == ["accuracy", "fit_seconds"] + sorted(MANY)[: MAX_METRICS - 2]
    assert obs.trial.message == "kept 64 of 5002 metrics"


def test_running_trials_are_bounded_too(spec: Any) -> None:
    text = sdk({**MANY, "accuracy": 0.5}, curve=[[s, {"accuracy": s / 10_000}] for s in range(3_000)])
    assert len(text) < MAX_REPORT_BYTES
    obs = observe_trial(spec, job(complete=False), [pod(text, phase="Running")], None)
    assert not obs.final and obs.trial.state is TrialState.RUNNING
    assert len(obs.trial.metrics) == MAX_METRICS and list(obs.trial.metrics)[0] == "accuracy"
    assert MAX_CURVE_POINTS // 2 < len(obs.trial.curve) <= MAX_CURVE_POINTS
    assert obs.trial.curve[-1] == (2_999, 0.2999)


@FUZZ
@given(annotation=st.one_of(st.none(), documents().map(lambda d: d.decode("utf-8", "replace")
                                                       if isinstance(d, bytes) else d)),
       termination=st.one_of(st.none(), st.text(max_size=300)),
       complete=st.booleans(), failed=st.booleans())
def test_observation_never_raises_and_final_trials_record_within_bounds(
        spec: Any, annotation: str | None, termination: str | None, complete: bool, failed: bool) -> None:
    obs = observe_trial(spec, job(complete=complete, failed=failed and not complete),
                        [pod(annotation, termination_message=termination)], None)
    if obs.final:
        assert obs.trial.state in (TrialState.SUCCEEDED, TrialState.FAILED)
        if obs.trial.state is TrialState.FAILED:
            assert obs.trial.reason in (Reason.INVALID_METRICS, Reason.METRICS_MISSING, Reason.ERROR)
        else:
            assert obs.trial.objective_value(spec.objective) is not None
        assert len(serialized(obs.trial.to_record())) <= MAX_RECORD_BYTES


def test_reports_after_the_trial_ended_are_ignored(spec: Any) -> None:
    """Once recorded as finished, a trial's record is final: later annotations on its pod change nothing."""
    body = {"metadata": {"name": "e", "namespace": "ns", "uid": "u"}}
    state = ClusterState()
    worker = ExperimentWorker(("ns", "e"), state, api_factory=lambda: None)
    first = observe_trial(spec, job(), [pod(sdk({"accuracy": 0.5}))], None).trial
    worker.records = {1: first}
    view = ClusterView(jobs={"e-0001": job()},
                       pods={"e-0001-abc": pod(sdk({"accuracy": 0.99, **MANY}, seq=99))})
    trials, finished_now, missing = worker._observe(spec, body["metadata"]["name"], view)[:3]
    assert finished_now == [] and missing == []
    assert trials[1] is first and trials[1].metrics == {"accuracy": 0.5}
