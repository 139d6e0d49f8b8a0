"""State checkpoints: round trip, generations, and every way a file on disk goes bad.

Each bad file must give either the previous generation or a clean fresh start, with one
log line saying why, and never an exception out of `load_checkpoint`.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import signal
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from edge_config.errors import CheckpointError, EdgewatchError
from edge_config.manifest import read_manifest
from runtime.engine.streams import NO_SEQ
from runtime.state import checkpoint as checkpoint_module
from runtime.state.checkpoint import (
    LoadResult,
    StateLayout,
    StateSnapshot,
    load_checkpoint,
    model_checkpoint_path,
    previous_generation,
    write_checkpoint,
)
from runtime.state.format import MAGIC, decode_snapshot, encode_snapshot
from tests.support.onnx_artifacts import write_lstm_artifact

SHA = hashlib.sha256(b"model-a").hexdigest()
OTHER_SHA = hashlib.sha256(b"model-b").hexdigest()
LAYOUT = StateLayout(SHA, (("h0.lstm", 2, 8), ("c0.lstm", 2, 8)))


def make_snapshot(n: int = 5, *, sha: str = SHA, hidden: int = 8, seed: int = 0) -> StateSnapshot:
    rng = np.random.default_rng(seed)
    streams = tuple(f"line{i % 3}/machine-{seed}-{i}" for i in range(n))
    last_seq = np.arange(n, dtype=np.int64) * 7 + seed
    if n:
        last_seq[0] = NO_SEQ
    return StateSnapshot(
        model_sha256=sha,
        streams=streams,
        states={name: rng.standard_normal((2, n, hidden)).astype(np.float32) for name in ("h0.lstm", "c0.lstm")},
        last_seq=last_seq,
        last_ts=np.where(np.arange(n) % 2 == 0, 1.7e9 + np.arange(n), np.nan),
        steps=np.arange(n, dtype=np.int64) + 100 * seed,
        columns={  # the kinds of columns runtime.engine.streams / scoring / tracker keep
            "seq_window": rng.integers(0, 2**63, n, dtype=np.uint64),
            "score.prev": rng.random((n, 4)),
            "alert.raised": np.arange(n) % 2 == 1,
            "alert.id": np.array([f"a{seed}{i:04x}" if i % 2 else "" for i in range(n)], dtype="<U24"),
            "alert.ring": rng.random((n, 5)) > 0.5,
            "alert.status": np.arange(n, dtype=np.int8) % 3,
        },
        created=1.7e9 + seed,
    )


def assert_same(a: StateSnapshot, b: StateSnapshot) -> None:
    assert a.model_sha256 == b.model_sha256
    assert a.streams == b.streams
    assert a.created == b.created
    assert a.states.keys() == b.states.keys()
    assert a.columns.keys() == b.columns.keys()
    for name in a.states:
        assert np.array_equal(a.states[name], b.states[name])
        assert a.states[name].dtype == b.states[name].dtype
    for name in a.columns:
        assert np.array_equal(a.columns[name], b.columns[name])
        assert a.columns[name].dtype == b.columns[name].dtype
    assert np.array_equal(a.last_seq, b.last_seq)
    assert np.array_equal(a.last_ts, b.last_ts, equal_nan=True)
    assert np.array_equal(a.steps, b.steps)


def two_generations(path: Path) -> tuple[StateSnapshot, StateSnapshot]:
    """Write an older and a newer generation; returns (older, newer)."""
    older, newer = make_snapshot(seed=1), make_snapshot(seed=2)
    write_checkpoint(path, older)
    write_checkpoint(path, newer)
    return older, newer


def load(path: Path) -> LoadResult:
    return load_checkpoint(path, LAYOUT)


# --- round trip and generations ---------------------------------------------------------


def test_round_trip_keeps_every_field(tmp_path: Path) -> None:
    snapshot = make_snapshot(7)
    written = write_checkpoint(tmp_path / "m.ckpt", snapshot)
    assert written.bytes == (tmp_path / "m.ckpt").stat().st_size
    result = load(tmp_path / "m.ckpt")
    assert result.status == "restored"
    assert result.path == tmp_path / "m.ckpt"
    assert result.skipped == ()
    assert result.snapshot is not None
    assert_same(result.snapshot, snapshot)
    assert result.snapshot.states["h0.lstm"].flags.writeable  # restorable in place


def test_round_trip_of_odd_stream_ids_and_no_streams(tmp_path: Path) -> None:
    odd = ("plant/ä/☃", "a b", "\udcff-lone-surrogate", "x" * 300, "")
    base = make_snapshot(len(odd))
    snapshot = StateSnapshot(SHA, odd, base.states, base.last_seq, base.last_ts, base.steps, base.columns)
    assert_same(decode_snapshot(encode_snapshot(snapshot)), snapshot)
    empty = make_snapshot(0)
    write_checkpoint(tmp_path / "m.ckpt", empty)
    result = load(tmp_path / "m.ckpt")
    assert result.status == "restored"
    assert result.snapshot is not None
    assert result.snapshot.streams == ()


def test_the_previous_generation_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "m.ckpt"
    older, newer = two_generations(path)
    assert_same(decode_snapshot(previous_generation(path).read_bytes()), older)
    assert_same(decode_snapshot(path.read_bytes()), newer)
    result = load(path)
    assert result.snapshot is not None
    assert_same(result.snapshot, newer)


def test_layout_from_a_real_manifest(tmp_path: Path) -> None:
    manifest = read_manifest(write_lstm_artifact(tmp_path / "art", hidden=8, layers=2))
    layout = StateLayout.from_manifest(manifest)
    assert layout.states == (("h0.lstm", 2, 8), ("c0.lstm", 2, 8))
    snapshot = make_snapshot(sha=manifest.sha256)
    write_checkpoint(tmp_path / "m.ckpt", snapshot)
    assert load_checkpoint(tmp_path / "m.ckpt", layout).status == "restored"


# --- damaged files ----------------------------------------------------------------------


def expect_previous(path: Path, older: StateSnapshot, reason: str) -> None:
    result = load(path)
    assert result.status == "restored", result.reason
    assert result.path == previous_generation(path), result.reason
    assert result.snapshot is not None
    assert_same(result.snapshot, older)
    assert [p for p, _ in result.skipped] == [path]
    assert reason in result.skipped[0][1], result.skipped[0][1]


def test_truncated_at_many_offsets_falls_back(tmp_path: Path) -> None:
    path = tmp_path / "m.ckpt"
    older, _ = two_generations(path)
    good = path.read_bytes()
    meta_len = struct.unpack_from("<I", good, 12)[0]
    offsets = {0, 1, 7, 8, 12, 23, 24, 24 + meta_len, len(good) - 33, len(good) - 32, len(good) - 1}
    offsets |= set(np.random.default_rng(5).integers(0, len(good), 40).tolist())
    for offset in sorted(offsets):
        path.write_bytes(good[:offset])
        expect_previous(path, older, "truncated" if offset < 56 else "length mismatch")


def test_truncated_without_a_previous_generation_starts_fresh(tmp_path: Path) -> None:
    path = tmp_path / "m.ckpt"
    write_checkpoint(path, make_snapshot())
    path.write_bytes(path.read_bytes()[:-100])
    result = load(path)
    assert result.status == "fresh"
    assert result.snapshot is None
    assert "length mismatch" in result.reason


def test_zeroed_file_and_zeroed_page(tmp_path: Path) -> None:
    path = tmp_path / "m.ckpt"
    older, _ = two_generations(path)
    good = path.read_bytes()
    path.write_bytes(bytes(len(good)))  # what a power cut on some flash file systems leaves
    expect_previous(path, older, "bad magic")
    torn = bytearray(good)
    torn[200:712] = bytes(512)  # one zeroed sector inside the file
    path.write_bytes(bytes(torn))
    expect_previous(path, older, "checksum mismatch")


def test_bit_flips_anywhere_are_detected(tmp_path: Path) -> None:
    path = tmp_path / "m.ckpt"
    older, _ = two_generations(path)
    good = path.read_bytes()
    rng = np.random.default_rng(1234)
    positions = list(range(24)) + rng.integers(0, len(good), 150).tolist() + list(range(len(good) - 32, len(good)))
    for position in positions:
        flipped = bytearray(good)
        flipped[position] ^= 1 << int(rng.integers(0, 8))
        path.write_bytes(bytes(flipped))
        result = load(path)
        assert result.path == previous_generation(path), (position, result.reason)
        assert result.snapshot is not None
        assert_same(result.snapshot, older)


def test_other_model_starts_fresh_with_the_reason(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "m.ckpt"
    write_checkpoint(path, make_snapshot(sha=OTHER_SHA, seed=1))
    write_checkpoint(path, make_snapshot(sha=OTHER_SHA, seed=2))
    with caplog.at_level(logging.INFO, logger="edgewatch.checkpoint"):
        result = load(path)
    assert result.status == "fresh"
    assert len(result.skipped) == 2
    assert all("written by model sha256" in why for _, why in result.skipped)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert all("\n" not in r.getMessage() for r in caplog.records)


def test_newest_of_another_model_falls_back_to_the_matching_one(tmp_path: Path) -> None:
    path = tmp_path / "m.ckpt"
    older = make_snapshot(seed=1)
    write_checkpoint(path, older)
    write_checkpoint(path, make_snapshot(sha=OTHER_SHA, seed=2))
    expect_previous(path, older, "written by model sha256")


@pytest.mark.parametrize(
    "layout",
    [
        StateLayout(SHA, (("h0.lstm", 2, 16), ("c0.lstm", 2, 16))),  # hidden differs
        StateLayout(SHA, (("h0.lstm", 3, 8), ("c0.lstm", 3, 8))),  # layers differ
        StateLayout(SHA, (("h0.gru", 2, 8),)),  # LSTM checkpoint, GRU model
    ],
)
def test_shape_mismatch_starts_fresh(tmp_path: Path, layout: StateLayout) -> None:
    write_checkpoint(tmp_path / "m.ckpt", make_snapshot())
    result = load_checkpoint(tmp_path / "m.ckpt", layout)
    assert result.status == "fresh"
    assert "state shapes differ" in result.reason


def test_missing_files(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="edgewatch.checkpoint"):
        result = load(tmp_path / "m.ckpt")
    assert result.status == "fresh"
    assert result.skipped == ()
    assert "no checkpoint yet" in result.reason
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]  # a first start is normal
    assert load(tmp_path / "no-such-folder" / "m.ckpt").status == "fresh"


def test_only_the_previous_generation_left(tmp_path: Path) -> None:
    """A crash between the two renames leaves no newest file: the previous one is restored."""
    path = tmp_path / "m.ckpt"
    older, _ = two_generations(path)
    path.unlink()
    result = load(path)
    assert result.path == previous_generation(path)
    assert result.snapshot is not None
    assert_same(result.snapshot, older)


def test_a_directory_or_fifo_at_the_path(tmp_path: Path) -> None:
    path = tmp_path / "m.ckpt"
    path.mkdir()
    result = load(path)
    assert result.status == "fresh"
    assert "not a regular file" in result.reason
    with pytest.raises(CheckpointError, match="not a regular file"):
        write_checkpoint(path, make_snapshot())
    assert path.is_dir()
    fifo = tmp_path / "f.ckpt"
    os.mkfifo(fifo)
    assert "not a regular file" in load(fifo).reason  # returns at once, does not block on the FIFO


def test_oversize_file_is_not_read(tmp_path: Path) -> None:
    write_checkpoint(tmp_path / "m.ckpt", make_snapshot())
    result = load_checkpoint(tmp_path / "m.ckpt", LAYOUT, max_bytes=100)
    assert result.status == "fresh"
    assert "over the 100-byte limit" in result.reason


def test_an_unexpected_error_while_reading_still_does_not_escape(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_checkpoint(tmp_path / "m.ckpt", make_snapshot())

    def broken(data: bytes) -> StateSnapshot:
        raise MemoryError("simulated")

    monkeypatch.setattr(checkpoint_module, "decode_snapshot", broken)
    result = load(tmp_path / "m.ckpt")
    assert result.status == "fresh"
    assert "MemoryError" in result.reason


def resign(meta: dict[str, object], payload: bytes) -> bytes:
    """A file with a *valid* checksum around hostile content (what another program could write)."""
    raw = json.dumps(meta).encode()
    blob = struct.pack("<8sHHIQ", MAGIC, 1, 0, len(raw), len(payload)) + raw + payload
    return blob + hashlib.sha256(blob).digest()


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda m: m["arrays"][0].update(dtype="|O"), "allow-list"),
        (lambda m: m["arrays"][0].update(dtype="<f16"), "allow-list"),
        (lambda m: m["arrays"][0].update(shape=[2**40, 2**40]), "runs past the payload"),
        (lambda m: m["arrays"][0].update(shape=[-1]), "bad shape"),
        (lambda m: m["arrays"][0].update(name="../etc"), "bad array name"),
        (lambda m: m["arrays"][0].update(name="surprise"), "bad array name"),
        (lambda m: m["arrays"].append(dict(m["arrays"][0])), "appears twice"),
        (lambda m: m["arrays"].pop(), "payload bytes"),
        (lambda m: m.update(streams="abc"), "streams must be a list"),
        (lambda m: m.update(streams=["a"] * len(m["streams"])), "unique"),
        (lambda m: m.update(model_sha256=None), "model_sha256"),
        (lambda m: m.update(created="yesterday"), "meta"),
        (lambda m: m.update(arrays=[a for a in m["arrays"] if a["name"] != "steps"]), "payload bytes"),
    ],
)
def test_hostile_meta_with_a_valid_checksum_is_refused(tmp_path: Path, change: object, reason: str) -> None:
    good = encode_snapshot(make_snapshot())
    meta_len = struct.unpack_from("<I", good, 12)[0]
    meta = json.loads(good[24 : 24 + meta_len])
    payload = good[24 + meta_len : -32]
    change(meta)  # type: ignore[operator]
    (tmp_path / "m.ckpt").write_bytes(resign(meta, payload))
    result = load(tmp_path / "m.ckpt")
    assert result.status == "fresh", result.reason
    assert reason in result.reason, result.reason


def test_other_format_version_is_refused(tmp_path: Path) -> None:
    good = bytearray(encode_snapshot(make_snapshot()))
    good[8:10] = struct.pack("<H", 2)
    blob = bytes(good[:-32])
    (tmp_path / "m.ckpt").write_bytes(blob + hashlib.sha256(blob).digest())
    assert "format version 2" in load(tmp_path / "m.ckpt").reason


# --- failed and interrupted writes ------------------------------------------------------


def snapshot_of_disk(path: Path) -> tuple[bytes | None, bytes | None]:
    prev = previous_generation(path)
    return (path.read_bytes() if path.exists() else None, prev.read_bytes() if prev.exists() else None)


def test_write_into_a_missing_or_non_folder_raises_checkpoint_error(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="cannot create a file"):
        write_checkpoint(tmp_path / "missing" / "m.ckpt", make_snapshot())
    (tmp_path / "file").write_text("x")
    with pytest.raises(EdgewatchError, match="cannot create a file"):
        write_checkpoint(tmp_path / "file" / "m.ckpt", make_snapshot())


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_write_into_a_read_only_folder_keeps_the_generations(tmp_path: Path) -> None:
    path = tmp_path / "state" / "m.ckpt"
    path.parent.mkdir()
    two_generations(path)
    before = snapshot_of_disk(path)
    path.parent.chmod(0o500)
    try:
        with pytest.raises(CheckpointError):
            write_checkpoint(path, make_snapshot(seed=3))
    finally:
        path.parent.chmod(0o700)
    assert snapshot_of_disk(path) == before


def test_disk_full_during_write_keeps_both_generations(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "m.ckpt"
    _older, newer = two_generations(path)
    before = snapshot_of_disk(path)

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(checkpoint_module.os, "fsync", full)
    with pytest.raises(CheckpointError, match="No space left"):
        write_checkpoint(path, make_snapshot(seed=3))
    monkeypatch.undo()
    assert snapshot_of_disk(path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.ckpt", "m.ckpt.1"]  # temp file removed
    result = load(path)
    assert result.snapshot is not None
    assert_same(result.snapshot, newer)


def test_failure_between_the_renames_restores_the_previous(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "m.ckpt"
    _, newer = two_generations(path)
    real_replace = os.replace
    calls = []

    def second_fails(src: object, dst: object) -> None:
        calls.append(dst)
        if len(calls) == 2:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        real_replace(src, dst)  # type: ignore[arg-type]

    monkeypatch.setattr(checkpoint_module.os, "replace", second_fails)
    with pytest.raises(CheckpointError, match="Input/output error"):
        write_checkpoint(path, make_snapshot(seed=3))
    monkeypatch.undo()
    assert not path.exists()
    result = load(path)
    assert result.path == previous_generation(path)
    assert result.snapshot is not None
    assert_same(result.snapshot, newer)
    write_checkpoint(path, make_snapshot(seed=4))  # the next write goes on from there
    assert load(path).snapshot.steps[0] == 400  # type: ignore[union-attr]
    assert_same(decode_snapshot(previous_generation(path).read_bytes()), newer)


def test_crash_before_the_rename_leaves_a_harmless_temp_file(tmp_path: Path) -> None:
    path = tmp_path / "m.ckpt"
    _, newer = two_generations(path)
    complete = tmp_path / ".m.ckpt.999999.deadbeef.tmp"
    complete.write_bytes(encode_snapshot(make_snapshot(seed=9)))  # fsynced, never renamed
    partial = tmp_path / ".m.ckpt.999998.cafebabe.tmp"
    partial.write_bytes(encode_snapshot(make_snapshot(seed=8))[:1000])  # cut mid-write
    result = load(path)
    assert result.path == path
    assert result.skipped == ()
    assert result.snapshot is not None
    assert_same(result.snapshot, newer)
    write_checkpoint(path, make_snapshot(seed=3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.ckpt", "m.ckpt.1"]


_WRITER = textwrap.dedent(
    """
    import sys, time
    sys.path[:0] = [sys.argv[2], sys.argv[3]]
    from tests.unit.test_checkpoint import make_snapshot
    from runtime.state.checkpoint import write_checkpoint
    snapshots = [make_snapshot(3000, seed=seed) for seed in range(1, 4)]  # ~0.8 MB files
    print("ready", flush=True)
    for i in range(10**6):
        write_checkpoint(sys.argv[1], snapshots[i % 3])
    """
)


def test_sigkill_at_random_points_of_a_write_loop(tmp_path: Path) -> None:
    """A real process killed mid-write (not a power cut: the page cache survives) always leaves
    a restorable generation that is one of the snapshots written, never a mix."""
    path = tmp_path / "m.ckpt"
    root = Path(__file__).resolve().parents[2]
    expected = {seed: make_snapshot(3000, seed=seed) for seed in range(1, 4)}
    rng = np.random.default_rng(7)
    restored = 0
    for _ in range(8):
        child = subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(path), str(root), str(root / "tests")],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            assert child.stdout is not None
            assert child.stdout.readline() == b"ready\n", child.stderr.read()
            time.sleep(float(rng.uniform(0.0, 0.15)))
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait(10)
        result = load(path)
        if result.snapshot is None:  # killed before the very first write finished
            assert result.skipped == ()
            assert not path.exists()
            continue
        seed = int(result.snapshot.steps[1] // 100)
        assert_same(result.snapshot, expected[seed])
        restored += 1
    assert restored >= 4  # the kills mostly land after some writes: the test is not vacuous


def test_write_refuses_to_replace_a_symlink(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_text("not ours")
    (tmp_path / "m.ckpt").symlink_to(target)
    with pytest.raises(CheckpointError, match="not a regular file"):
        write_checkpoint(tmp_path / "m.ckpt", make_snapshot())
    assert target.read_text() == "not ours"


def test_written_file_is_private(tmp_path: Path) -> None:
    write_checkpoint(tmp_path / "m.ckpt", make_snapshot())
    assert (tmp_path / "m.ckpt").stat().st_mode & 0o077 == 0


# --- the snapshot type ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("model_sha256", "ABC", "64 lowercase hex"),
        ("streams", ("a", "a", "b", "c", "d"), "unique"),
        ("states", {"h0.lstm": np.zeros((2, 5, 8))}, "float32"),
        ("states", {"h0.lstm": np.zeros((2, 4, 8), np.float32)}, "float32 [layers, 5, hidden]"),
        ("states", {"h0/lstm": np.zeros((2, 5, 8), np.float32)}, "names are"),
        ("last_seq", np.zeros(5, np.int32), "int64 [5]"),
        ("last_ts", np.zeros(4), "float64 [5]"),
        ("steps", [0, 0, 0, 0, 0], "int64 [5]"),
        ("columns", {"x": np.array([object()] * 5)}, "bool/int/float"),
        ("columns", {"x": np.zeros(5, np.complex64)}, "bool/int/float"),
        ("columns", {"x": np.array(["x" * 2000] * 5)}, "bool/int/float"),
        ("columns", {"x": np.zeros(4)}, "with 5 rows"),
        ("created", float("nan"), "finite"),
    ],
)
def test_an_inconsistent_snapshot_cannot_be_built(field: str, value: object, reason: str) -> None:
    fields = {k: getattr(make_snapshot(5), k) for k in StateSnapshot.__dataclass_fields__}
    fields[field] = value
    with pytest.raises(CheckpointError, match=reason.replace("[", r"\[")):
        StateSnapshot(**fields)


def test_one_file_per_model_next_to_the_configured_path(tmp_path: Path) -> None:
    base = tmp_path / "state.ckpt"
    assert model_checkpoint_path(base, "pump") == tmp_path / "state.pump.ckpt"
    assert model_checkpoint_path(base, "pump-forecaster_2") == tmp_path / "state.pump-forecaster_2.ckpt"
    odd = [model_checkpoint_path(base, name) for name in ("../../etc/passwd", "a/b", "a_b", "a.b", "", "ä")]
    assert all(p.parent == tmp_path and p.name.startswith("state.") and p.suffix == ".ckpt" for p in odd)
    assert len(set(odd)) == len(odd)  # "a/b", "a_b" and "a.b" keep separate files
    assert model_checkpoint_path(tmp_path / "state", "pump") == tmp_path / "state.pump"
