"""runtime.engine.streams: slots, slab growth by doubling, slot reuse, resets, TTL eviction, the cap."""

from __future__ import annotations

import numpy as np
import pytest

from edge_config.errors import ConfigError
from edge_config.manifest import StateSpec
from runtime.engine.streams import NO_SEQ, StateStore

SPECS = [
    StateSpec(input="h0.lstm", output="hn.lstm", shape=[2, "batch", 3], kind="lstm_h"),
    StateSpec(input="c0.lstm", output="cn.lstm", shape=[2, "batch", 3], kind="lstm_c"),
]


def _fill(store: StateStore, slot: int, value: float) -> None:
    n = np.array([slot])
    h = np.full((2, 1, 3), value, np.float32)
    store.scatter(n, {"hn.lstm": h, "cn.lstm": -h})


def test_slabs_have_the_graph_layout() -> None:
    store = StateStore(SPECS, max_streams=100, initial_capacity=4)
    assert store.column("h0.lstm").shape == (2, 4, 3)
    assert store.column("h0.lstm").dtype == np.float32
    assert store.steps.shape == (4,)
    assert store.last_seq.tolist() == [NO_SEQ] * 4


def test_growth_by_a_quarter_keeps_every_column() -> None:
    store = StateStore(SPECS, max_streams=1000, initial_capacity=64)
    store.add_column("extra", (5,), np.float64, np.nan, scope="model")
    capacities = set()
    for i in range(130):
        slot = store.open(f"s{i}", now=0.0)
        assert slot == i  # slots are handed out in order while none was freed
        _fill(store, slot, float(i + 1))
        store.column("extra")[slot] = i
        store.last_seq[slot] = 100 + i
        capacities.add(store.capacity)
    assert sorted(capacities) == [64, 80, 100, 125, 156]  # +25% (idle slack bounds RSS per stream)
    h = store.column("h0.lstm")
    assert h.shape == (2, 156, 3)
    for i in range(130):  # nothing lost in the copies
        assert (h[:, i] == i + 1).all()
        assert (store.column("c0.lstm")[:, i] == -(i + 1)).all()
        assert (store.column("extra")[i] == i).all()
        assert store.last_seq[i] == 100 + i
    # Slots not handed out yet are left unwritten (no RSS until used); open fills every column.
    slot = store.open("s130", now=0.0)
    assert slot == 130
    assert (store.column("h0.lstm")[:, slot] == 0).all()
    assert np.isnan(store.column("extra")[slot]).all()
    assert store.last_seq[slot] == NO_SEQ


def test_small_stores_grow_by_at_least_16_slots() -> None:
    store = StateStore(SPECS, max_streams=100, initial_capacity=2)
    for i in range(3):
        store.open(f"s{i}", now=0.0)
    assert store.capacity == 18


def test_freed_slot_is_reused_and_reset() -> None:
    store = StateStore(SPECS, max_streams=10, initial_capacity=4)
    a = store.open("a", 0.0)
    store.open("b", 0.0)
    assert a is not None
    _fill(store, a, 5.0)
    store.steps[a], store.last_seq[a], store.last_ts[a] = 7, 99, 123.0
    assert store.release("a")
    assert not store.release("a")
    assert "a" not in store
    assert len(store) == 1
    c = store.open("c", 1.0)
    assert c == a  # the free list hands the freed slot out again
    assert (store.column("h0.lstm")[:, c] == 0).all()
    assert store.steps[c] == 0
    assert store.last_seq[c] == NO_SEQ
    assert np.isnan(store.last_ts[c])
    assert store.last_seen[c] == 1.0
    assert store.stream_of(c) == "c"
    assert store.slots == {"b": 1, "c": 0}


def test_max_streams_is_a_cap_and_refusals_are_counted() -> None:
    store = StateStore(SPECS, max_streams=5, initial_capacity=2)
    slots = [store.open(f"s{i}", 0.0) for i in range(5)]
    assert slots == [0, 1, 2, 3, 4]
    assert store.capacity == 5
    assert store.open("one-too-many", 0.0) is None  # refused (the engine counts it: rejected max-streams)
    assert store.open("s3", 0.0) == 3  # known streams still get their slot
    store.release("s0")
    assert store.open("now-fits", 0.0) == 0


def test_gather_scatter_with_fancy_indexing() -> None:
    store = StateStore(SPECS, max_streams=10, initial_capacity=8)
    for i in range(6):
        store.open(f"s{i}", 0.0)
    slots = np.array([4, 1, 3])
    new_h = np.arange(2 * 3 * 3, dtype=np.float32).reshape(2, 3, 3)
    store.scatter(slots, {"hn.lstm": new_h, "cn.lstm": -new_h})
    feeds = store.gather(np.array([3, 4]))
    assert set(feeds) == {"h0.lstm", "c0.lstm"}
    assert feeds["h0.lstm"].flags.c_contiguous
    assert feeds["h0.lstm"].shape == (2, 2, 3)
    np.testing.assert_array_equal(feeds["h0.lstm"], new_h[:, [2, 0]])
    np.testing.assert_array_equal(feeds["c0.lstm"], -new_h[:, [2, 0]])
    assert (store.column("h0.lstm")[:, [0, 2, 5]] == 0).all()


def test_reset_model_keeps_stream_scope() -> None:
    store = StateStore(SPECS, max_streams=10)
    slot = store.open("s", 0.0)
    assert slot is not None
    _fill(store, slot, 3.0)
    store.steps[slot], store.last_seq[slot], store.seq_window[slot] = 9, 41, 7
    store.reset_model(np.array([slot]))
    assert (store.column("h0.lstm")[:, slot] == 0).all()
    assert store.steps[slot] == 0
    assert store.last_seq[slot] == 41
    assert store.seq_window[slot] == 7
    store.forget_sequence(slot)
    assert store.last_seq[slot] == NO_SEQ
    assert store.seq_window[slot] == 0


def test_evict_idle_on_an_injected_clock() -> None:
    store = StateStore(SPECS, max_streams=10)
    for name, seen in (("old", 0.0), ("mid", 50.0), ("new", 100.0)):
        store.open(name, seen)
    evicted = [store.evict_idle(now=100.0, ttl=60.0), store.evict_idle(now=100.0, ttl=60.0)]
    evicted.append(sorted(store.evict_idle(now=1000.0, ttl=60.0)))
    assert evicted == [["old"], [], ["mid", "new"]]
    assert len(store) == 0
    assert sum(map(len, evicted)) == 3
    assert store.open("again", 1000.0) is not None


def test_refuses_state_without_batch_axis_1() -> None:
    spec = StateSpec(input="h", output="hn", shape=["batch", 2, 3], batch_axis=0)
    with pytest.raises(ConfigError):
        StateStore([spec], max_streams=4)
    with pytest.raises(ConfigError):
        StateStore(SPECS, max_streams=0)


def test_export_restore_round_trip() -> None:
    store = StateStore(SPECS, max_streams=10, initial_capacity=2)
    store.add_column("ids", (), object, None, scope="stream")
    for i, name in enumerate(["a", "b", "c"]):
        slot = store.open(name, 0.0)
        assert slot is not None
        _fill(store, slot, float(i + 1))
        store.last_seq[slot] = 10 * i
        store.column("ids")[slot] = f"id{i}" if i != 1 else None
    store.release("b")
    streams, columns = store.export()
    assert streams == ("a", "c")
    assert "last_seen" not in columns
    assert columns["h0.lstm"].shape == (2, 2, 3)
    assert columns["last_seq"].tolist() == [0, 20]
    columns["ids"] = np.array(["" if v is None else v for v in columns["ids"]])  # as a checkpoint stores it
    fresh = StateStore(SPECS, max_streams=10, initial_capacity=1)
    fresh.add_column("ids", (), object, None, scope="stream")
    fresh.open("other", 0.0)
    assert fresh.restore(streams, columns, now=50.0) == []
    for name, value in (("a", 1.0), ("c", 3.0)):
        slot = fresh.slot(name)
        assert slot is not None
        assert (fresh.column("h0.lstm")[:, slot] == value).all()
        assert (fresh.column("c0.lstm")[:, slot] == -value).all()
        assert fresh.last_seen[slot] == 50.0
    assert fresh.column("ids")[fresh.slot("a")] == "id0"
    assert fresh.last_seq[fresh.slot("c")] == 20


def test_restore_refuses_what_does_not_fit() -> None:
    store = StateStore(SPECS, max_streams=2)
    with pytest.raises(ValueError, match="no column"):
        store.restore(["a"], {"nope": np.zeros(1)}, now=0.0)
    with pytest.raises(ValueError, match="expected"):
        store.restore(["a"], {"h0.lstm": np.zeros((2, 1, 4), np.float32)}, now=0.0)  # another hidden size
    assert len(store) == 0  # nothing was opened
    assert store.restore(["a", "b", "c"], {"steps": np.array([1, 2, 3])}, now=0.0) == ["c"]
    assert store.steps[store.slot("b")] == 2


def test_this_numpy_lets_the_service_turn_its_hugepage_hint_off() -> None:
    # A numpy without the switch would silently put the slabs' untouched tails back into RSS
    # (2 MB at a time): the memory goal depends on it, so a numpy upgrade that drops it shows here.
    from runtime.engine.streams import no_hugepage_slabs

    assert no_hugepage_slabs() is True
