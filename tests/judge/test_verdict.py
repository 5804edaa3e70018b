"""parse_verdict: tolerant of how models decorate JSON, strict about what it means."""

from __future__ import annotations

import pytest

from stagecrew.judge.verdict import Verdict, VerdictParseError, parse_verdict


def test_plain_json() -> None:
    v = parse_verdict(
        '{"met": true, "impossible": false, "reason": "tests pass", "missing": [], '
        '"evidence": ["pytest passed"]}'
    )
    assert v == Verdict(
        met=True, reason="tests pass", missing=[], evidence=["pytest passed"], source="model"
    )


def test_code_fence_and_prose_around() -> None:
    text = (
        "Looking at the evidence, the diff adds the function.\n\n"
        "```json\n"
        '{"met": false, "reason": "no test for {edge} cases", "missing": ["a test"]}\n'
        "```\n"
        "Let me know if you need more."
    )
    v = parse_verdict(text)
    assert not v.met and v.reason == "no test for {edge} cases" and v.missing == ["a test"]


def test_bare_object_inside_prose_with_braces_in_strings() -> None:
    text = 'Verdict: {"met": "yes", "reason": "ok } really", "evidence": "the diff"} done.'
    v = parse_verdict(text)
    assert v.met and v.reason == "ok } really" and v.evidence == ["the diff"]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [('"yes"', True), ('"No"', False), ('"TRUE"', True), ("0", False), ('"not met"', False)],
)
def test_yes_no_style_values(raw: str, expected: bool) -> None:
    assert parse_verdict(f'{{"met": {raw}, "reason": "r"}}').met is expected


def test_last_object_with_met_wins_and_trailing_commas_are_forgiven() -> None:
    text = (
        'The schema is {"met": true, "reason": "..."}. My answer:\n'
        '{"met": false, "impossible": "yes", "reason": "needs network access", "missing": [],}'
    )
    v = parse_verdict(text)
    assert not v.met and v.impossible and v.reason == "needs network access"


def test_impossible_is_dropped_when_met() -> None:
    assert not parse_verdict('{"met": true, "impossible": true, "reason": "r"}').impossible


def test_source_can_be_set() -> None:
    assert parse_verdict('{"met": true, "reason": "r"}', source="policy").source == "policy"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty reply"),
        ("The goal is met.", "no JSON object found"),
        ('{"done": true, "reason": "r"}', "no 'met' field (keys seen: done, reason)"),
        ('{"met": "maybe", "reason": "r"}', "field 'met': expected true/false"),
        ('{"met": true}', "field 'reason'"),
        ('{"met": true, "reason": "r", "missing": 3}', "field 'missing'"),
        ('{"met": false, "impossible": "perhaps", "reason": "r"}', "field 'impossible'"),
    ],
)
def test_precise_errors(text: str, message: str) -> None:
    with pytest.raises(VerdictParseError) as info:
        parse_verdict(text)
    assert message in str(info.value)
