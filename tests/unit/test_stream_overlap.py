"""`config check` refuses stream entries whose topic filters overlap (issue 12): a message goes to
the first matching entry only, so the second entry's model silently never saw those topics."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from edge_config.schema import GatewayConfig, filters_overlap


@pytest.mark.parametrize(
    ("a", "b", "overlap"),
    [
        ("plant/+/telemetry", "plant/line1/telemetry", True),
        ("plant/#", "plant", True),  # '#' matches the parent level too
        ("plant/+/telemetry", "plant/#", True),
        ("+/b", "a/+", True),
        ("plant/+/telemetry", "plant/+/status", False),
        ("plant/+", "plant/a/b", False),
        ("plant", "plant/a", False),
    ],
)
def test_filters_overlap(a: str, b: str, overlap: bool) -> None:
    assert filters_overlap(a, b) is overlap
    assert filters_overlap(b, a) is overlap


def _config(*topics: list[str]) -> dict[str, object]:
    return {
        "streams": [{"name": f"s{i}", "topics": t, "model": "m"} for i, t in enumerate(topics)],
        "models": {"m": {"path": "model", "target": "cpu"}},
    }


def test_two_stream_entries_on_the_same_topics_are_refused() -> None:
    with pytest.raises(ValidationError) as info:
        GatewayConfig.model_validate(_config(["plant/+/telemetry"], ["other/x", "plant/pump1/telemetry"]))
    message = str(info.value)
    assert "streams[1].topics" in message
    assert "'plant/pump1/telemetry' overlaps 'plant/+/telemetry' of streams[0] ('s0')" in message
    GatewayConfig.model_validate(_config(["plant/+/telemetry"], ["plant/+/status"]))  # disjoint: fine
