from __future__ import annotations

import pytest

from edge_config.errors import ConfigError, PayloadError
from edge_config.schema import StreamConfig
from runtime.mqtt.topics import MAX_ID_BYTES, StreamIdResolver, check_stream_id, topic_matches


def _stream(*topics: str, template: str | None = None, name: str = "s") -> StreamConfig:
    return StreamConfig(name=name, topics=list(topics), stream_id=template, model="m")


def _id(resolver: StreamIdResolver, topic: str) -> str | None:
    route = resolver.resolve(topic)
    return None if route is None else route.stream


@pytest.mark.parametrize(
    ("flt", "topic", "expected"),
    [
        ("a/+/c", "a/b/c", True),
        ("a/+/c", "a/b/d", False),
        ("a/#", "a", True),  # '#' matches the parent level too
        ("a/#", "a/b/c", True),
        ("#", "$SYS/x", False),  # wildcards never match '$' topics at the first level
        ("+/x", "$SYS/x", False),
        ("$SYS/#", "$SYS/x", True),
        ("a/+", "a/b/c", False),
        ("a/b", "a/b", True),
        ("a/+", "a/", True),  # '+' matches an empty level
    ],
)
def test_topic_matches_follows_mqtt(flt: str, topic: str, expected: bool) -> None:
    assert topic_matches(flt.split("/"), topic.split("/")) is expected


def test_default_id_is_the_wildcard_levels() -> None:
    r = StreamIdResolver([_stream("plant/+/+/telemetry"), _stream("site/#", name="site")])
    assert _id(r, "plant/L1/press-3/telemetry") == "L1/press-3"
    assert _id(r, "site/a/b/c") == "a/b/c"
    assert _id(r, "other/x") is None
    assert r.matches("plant/L1/x/telemetry")
    assert not r.matches("plant/L1/x/status")
    assert r.filters == ["plant/+/+/telemetry", "site/#"]


def test_filter_without_wildcard_uses_the_stream_name() -> None:
    r = StreamIdResolver([_stream("machine1/data", name="press-1")])
    route = r.resolve("machine1/data")
    assert route is not None
    assert route.stream == "press-1"
    assert route.config.name == "press-1"


def test_template_keeps_named_levels_in_order() -> None:
    r = StreamIdResolver([_stream("plant/+/+/+", template="plant/{line}/+/{machine}")])
    assert _id(r, "plant/L1/cell/press-3") == "L1/press-3"


def test_first_matching_stream_wins() -> None:
    first, second = _stream("a/+", name="first"), _stream("a/#", name="second")
    route = StreamIdResolver([first, second]).resolve("a/x")
    assert route is not None
    assert route.config is first


@pytest.mark.parametrize(
    "template",
    [
        "plant/{line}/telemetry",  # fewer levels than the filter
        "plant/{line}/{machine}/status",  # literal where the filter has a different literal
        "plant/{a}/{a}/telemetry",  # same name twice
        "plant/+/+/telemetry",  # names nothing
        "plant/{line}x/+/telemetry",  # placeholder not a whole level
        "#/{line}",  # '#' not last
    ],
)
def test_bad_templates_fail_at_start(template: str) -> None:
    # The resolver refuses them itself, whatever built the StreamConfig (model_construct skips
    # the schema's own template check).
    unchecked = StreamConfig.model_construct(name="s", topics=["plant/+/+/telemetry"], stream_id=template, model="m")
    with pytest.raises(ConfigError):
        StreamIdResolver([unchecked])


def test_template_with_hash_covers_a_hash_filter() -> None:
    r = StreamIdResolver([_stream("site/+/#", template="site/{area}/#")])
    assert _id(r, "site/north/a/b") == "north"


@pytest.mark.parametrize(
    "topic",
    [
        "site/a/$b",  # '$' level
        "site/a/../b",  # '..' level
        "site/./b",
        "site/a//b",  # empty level
        "site/" + "/".join("x" * 9),  # 9 levels > MAX_ID_LEVELS
        "site/" + "x" * (MAX_ID_BYTES + 1),
        "site/a\x00b",
        "site/a\x1bb",  # control character (log/terminal injection)
        "site/a\ud800",  # lone surrogate (cannot be encoded back)
    ],
)
def test_hostile_ids_are_rejected(topic: str) -> None:
    r = StreamIdResolver([_stream("site/#")])
    with pytest.raises(PayloadError) as err:
        r.resolve(topic)
    assert err.value.reason == "stream-id"


def test_plus_filter_bounds_levels_and_rejects_empty_level() -> None:
    r = StreamIdResolver([_stream("p/+/t")])
    with pytest.raises(PayloadError):
        r.resolve("p//t")
    assert _id(r, "p/x/t") == "x"


@pytest.mark.parametrize("bad", ["a+b", "a#", "", "$x", "a/$x"])
def test_check_stream_id_rejects_wildcards_and_dollar(bad: str) -> None:
    with pytest.raises(PayloadError):
        check_stream_id(bad, max_levels=4)


def test_check_stream_id_accepts_unicode_and_dots_inside_levels() -> None:
    assert check_stream_id("Linie-Ä/press.3", max_levels=2) == "Linie-Ä/press.3"


@pytest.mark.parametrize(
    "bad",
    [
        "press\u200b3",  # zero-width space
        "press\u200d3",  # zero-width joiner
        "\u200fpress",  # right-to-left mark
        "a/\u202eevil",  # right-to-left override
        "press\u2066x\u2069",  # bidi isolates
        "\u2060press",  # word joiner
        "\ufeffpress",  # BOM / zero-width no-break space
        "press\u00ad3",  # soft hyphen (another format character, "Cf")
        "press\u0085",  # C1 control (next line)
        "a\u2028b",  # line separator
    ],
)
def test_check_stream_id_rejects_invisible_and_bidi_characters(bad: str) -> None:
    with pytest.raises(PayloadError) as err:
        check_stream_id(bad, max_levels=4)
    assert err.value.reason == "stream-id"
    assert bad not in str(err.value)  # shown escaped, never raw in a log line


def test_resolver_rejects_a_bidi_override_in_the_topic() -> None:
    r = StreamIdResolver([_stream("site/#")])
    with pytest.raises(PayloadError) as err:
        r.resolve("site/press\u202e3")
    assert err.value.reason == "stream-id"
