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
        ('{"acc": 1', "kubetune.io/metrics is not JSON"),
        ("[1, 2]", "kubetune.io/metrics is not a JSON object"),
        ('"0.9"', "kubetune.io/metrics is not a JSON object"),
        ("null", "kubetune.io/metrics is not a JSON object"),
        ('{"metrics": 5}', "kubetune.io/metrics: metrics is not a JSON object"),
        ('{"metrics": [["acc", 1]]}', "kubetune.io/metrics: metrics is not a JSON object"),
        ("[" * 9 + "]" * 9, "kubetune.io/metrics is nested deeper than 8 levels"),
        ("[" * 100_000 + "]" * 100_000, "kubetune.io/metrics is nested deeper than 8 levels"),
        ('{"":' * 50_000 + "1" + "}" * 50_000, "kubetune.io/metrics is nested deeper than 8 levels"),
        ('{"metrics": {"acc": 1}, "x": "[[[[[[[[[[[[[[[[[", "y": [[[[[[[[[1]]]]]]]]]}',
         "kubetune.io/metrics is nested deeper than 8 levels"),
        ("x" * (256 * 1024 + 1), "kubetune.io/metrics is 262145 characters, more than the 262144 bytes"),
        (b"\xff\xfe{}", "kubetune.io/metrics is not UTF-8 text (byte 0)"),
    ],
)
def test_unusable_annotations(text: str | bytes, message: str) -> None:
    with pytest.raises(MetricsFormatError) as info:
        parse_annotation(text)
    assert str(info.value).startswith(message)


@pytest.mark.parametrize(
    "text, why",
    [
        ('{"acc": NaN, "ok": 1}', "is not finite"),
        ('{"acc": Infinity, "ok": 1}', "is not finite"),
        ('{"acc": -Infinity, "ok": 1}', "is not finite"),
        ('{"acc": 1e400, "ok": 1}', "is not finite"),
        ('{"acc": 1' + "0" * 400 + ', "ok": 1}', "is not finite"),  # an int beyond float range
        ('{"acc": -1' + "0" * 5000 + ', "ok": 1}', "is not finite"),  # beyond Python's int parsing limit
        ('{"acc": "0.9", "ok": 1}', "is not a number"),
        ('{"acc": true, "ok": 1}', "is not a number"),
        ('{"acc": null, "ok": 1}', "is not a number"),
        ('{"acc": [1], "ok": 1}', "is not a number"),
        ('{"acc": {"v": 1}, "ok": 1}', "is not a number"),
        ('{"metrics": {"acc": NaN, "ok": 1}, "seq": 1}', "is not finite"),
    ],
)
def test_unusable_metrics_are_left_out_with_the_reason(text: str, why: str) -> None:
    r = parse_annotation(text)
    assert r.metrics == {"ok": 1.0}
    assert r.rejected == {"acc": why}
    assert r.problem("acc") == f"kubetune.io/metrics: metric 'acc' {why}"
    assert r.problem("ok") is None and r.problem("missing") is None
    assert len(r.notes) == 1 and "'acc'" in r.notes[0] and r.notes[0].startswith("ignored 1 metrics")


@pytest.mark.parametrize(
    "extra, note",
    [
        ('"seq": "x"', "ignored 1 seq that is not an integer in [0, 2**63)"),
        ('"seq": [1]', "ignored 1 seq that is not an integer in [0, 2**63)"),
        ('"seq": -1', "ignored 1 seq that is not an integer in [0, 2**63)"),
        ('"seq": ' + "9" * 30, "ignored 1 seq that is not an integer in [0, 2**63)"),
        ('"curve": 5', "ignored 1 curve that is not a list"),
        ('"curve": {"0": 1}', "ignored 1 curve that is not a list"),
        ('"curve": [[-1, {"acc": 1}], [1208925819614629174706176, {"acc": 1}], [9007199254740992, {"acc": 1}]]',
         "ignored 3 curve points that are not [step, {metrics}] with an integer step in [0, 2**53)"),
    ],
)
def test_bad_envelope_fields_are_ignored_with_a_note(extra: str, note: str) -> None:
    r = parse_annotation('{"metrics": {"acc": 0.5}, ' + extra + "}")
    assert r.metrics == {"acc": 0.5} and r.seq == 0 and r.curve == []
    assert r.notes == [note]


def test_steps_are_whole_numbers_in_range() -> None:
    r = parse_annotation(sdk_doc(curve=[[0, {"acc": 0.1}], [2.0, {"acc": 0.2}], [9007199254740991, {"acc": 0.3}],
                                        [2.5, {"acc": 1}], [1e300, {"acc": 1}], [False, {"acc": 1}]]))
    assert r.curve == [(0, {"acc": 0.1}), (2, {"acc": 0.2}), (2**53 - 1, {"acc": 0.3})]
    assert all(isinstance(s, int) for s, _ in r.curve)


def test_duplicate_keys_last_wins_with_a_note() -> None:
    r = parse_annotation('{"metrics": {"acc": 0.1, "acc": 0.9}, "seq": 1, "seq": 2}')
    assert r.metrics == {"acc": 0.9} and r.seq == 2
    assert r.notes == ["ignored 2 duplicate keys (the last value is used) ('seq', 'acc')"]


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
        ('{"acc": 1' + "0" * 400 + "}", "the termination message: metric 'acc' is not finite"),
        ('{"acc": 1, "b": -Infinity}', "the termination message: metric 'b' is not finite"),
        ("[" * 20 + "]" * 20, "the termination message's last line is nested deeper than 8 levels"),
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
