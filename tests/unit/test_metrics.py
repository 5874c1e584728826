"""Parsing what trials report: the ``kubetune.io/metrics`` annotation and the termination message."""

from __future__ import annotations

import json

import pytest

from kubetune.metrics import (
    METRICS_ANNOTATION,
    TERMINATION_MESSAGE_LIMIT,
    MetricsFormatError,
    Report,
    parse_annotation,
    parse_termination_message,
)

# ------------------------------------------------------------------------------------------------- annotation


def sdk_doc(**over: object) -> str:
    """The annotation as the SDK writes it (see kubetune_trial._patch_pod)."""
    doc = {
        "seq": 3,
        "step": 2,
        "metrics": {"acc": 0.9, "loss": 0.3},
        "curve": [[0, {"acc": 0.5}], [2, {"acc": 0.9, "loss": 0.3}], [1, {"acc": 0.7}]],
        "time": 1700000000.5,
    }
    doc.update(over)
    return json.dumps(doc, separators=(",", ":"))


def test_annotation_name() -> None:
    assert METRICS_ANNOTATION == "kubetune.io/metrics"


def test_sdk_format() -> None:
    r = parse_annotation(sdk_doc())
    assert r.metrics == {"acc": 0.9, "loss": 0.3}
    assert r.seq == 3
    assert r.curve == [(0, {"acc": 0.5}), (1, {"acc": 0.7}), (2, {"acc": 0.9, "loss": 0.3})]  # sorted by step
    assert r.objective_curve("acc") == [(0, 0.5), (1, 0.7), (2, 0.9)]
    assert r.objective_curve("loss") == [(2, 0.3)]
    assert r.objective_curve("missing") == []


def test_plain_object_of_final_metrics() -> None:
    r = parse_annotation('{"accuracy": 0.97, "epochs": 12}')
    assert r == Report(metrics={"accuracy": 0.97, "epochs": 12.0}, curve=[], seq=0)
    assert isinstance(r.metrics["epochs"], float)


def test_sdk_format_without_curve_or_seq() -> None:
    r = parse_annotation('{"metrics": {"acc": 1}}')
    assert r.metrics == {"acc": 1.0} and r.curve == [] and r.seq == 0


def test_bad_curve_points_are_skipped() -> None:
    r = parse_annotation(sdk_doc(curve=[[0, {"acc": 0.1}], [1, {"acc": "x"}], "junk", [2], [3.5, {"acc": 1}],
                                        [True, {"acc": 1}], [4, {"acc": 0.4}]]))
    assert r.curve == [(0, {"acc": 0.1}), (4, {"acc": 0.4})]


@pytest.mark.parametrize(
    "text, message",
    [
        ("not json", "kubetune.io/metrics is not JSON"),
        ("", "kubetune.io/metrics is not JSON"),
        ("[1, 2]", "kubetune.io/metrics is not a JSON object"),
        ('"0.9"', "kubetune.io/metrics is not a JSON object"),
        ('{"acc": NaN}', "kubetune.io/metrics: metric 'acc' is not finite"),
        ('{"acc": Infinity}', "kubetune.io/metrics: metric 'acc' is not finite"),
        ('{"acc": -Infinity}', "kubetune.io/metrics: metric 'acc' is not finite"),
        ('{"acc": "0.9"}', "kubetune.io/metrics: metric 'acc' is not a number"),
        ('{"acc": true}', "kubetune.io/metrics: metric 'acc' is not a number"),
        ('{"acc": null}', "kubetune.io/metrics: metric 'acc' is not a number"),
        ('{"acc": [1]}', "kubetune.io/metrics: metric 'acc' is not a number"),
        ('{"metrics": 5}', "kubetune.io/metrics is not a JSON object"),
        ('{"metrics": {"acc": NaN}, "seq": 1}', "kubetune.io/metrics: metric 'acc' is not finite"),
        ('{"metrics": {"acc": 1}, "seq": "x"}', "kubetune.io/metrics: seq is not an integer"),
        ('{"metrics": {"acc": 1}, "seq": [1]}', "kubetune.io/metrics: seq is not an integer"),
        ('{"metrics": {"acc": 1}, "curve": 5}', "kubetune.io/metrics: curve is not a list"),
        ('{"metrics": {"acc": 1}, "curve": {"0": 1}}', "kubetune.io/metrics: curve is not a list"),
    ],
)
def test_bad_annotations(text: str, message: str) -> None:
    with pytest.raises(MetricsFormatError) as info:
        parse_annotation(text)
    assert str(info.value).startswith(message)


# ------------------------------------------------------------------------------------------------- termination message


def test_termination_message_last_line_wins() -> None:
    text = '{"acc": 0.1}\nsome log line\n{"acc": 0.5, "loss": 2}\n\n  \n'
    assert parse_termination_message(text) == {"acc": 0.5, "loss": 2.0}


def test_termination_message_single_line_without_newline() -> None:
    assert parse_termination_message('{"acc": 1}') == {"acc": 1.0}


@pytest.mark.parametrize("text", ["", "\n", "   \n\t\n"])
def test_empty_termination_message(text: str) -> None:
    assert parse_termination_message(text) is None


@pytest.mark.parametrize(
    "text, message",
    [
        ('{"acc": NaN}', "the termination message: metric 'acc' is not finite"),
        ('{"acc": Infinity}', "the termination message: metric 'acc' is not finite"),
        ('{"acc": "high"}', "the termination message: metric 'acc' is not a number"),
        ('{"acc": false}', "the termination message: metric 'acc' is not a number"),
        ("accuracy=0.9", "the termination message's last line is not JSON"),
        ('{"acc": 0.9}\nTraceback: boom', "the termination message's last line is not JSON"),
        ("0.9", "the termination message is not a JSON object"),
        ("[0.9]", "the termination message is not a JSON object"),
        ("null", "the termination message is not a JSON object"),
    ],
)
def test_bad_termination_messages(text: str, message: str) -> None:
    with pytest.raises(MetricsFormatError) as info:
        parse_termination_message(text)
    assert str(info.value) == message


def test_only_the_tail_of_a_long_termination_message_is_read() -> None:
    # Kubernetes keeps at most 4096 bytes of the message; the last line is what counts.
    text = "x" * 10_000 + "\n" + '{"acc": 0.75}\n'
    assert parse_termination_message(text) == {"acc": 0.75}
    assert TERMINATION_MESSAGE_LIMIT == 4096


def test_empty_object_is_no_metrics() -> None:
    assert parse_termination_message("{}") == {}
