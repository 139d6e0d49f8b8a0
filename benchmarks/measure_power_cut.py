"""What a power cut between two checkpoints costs a stream, measured on the shipped demo model.

    .venv/bin/python benchmarks/measure_power_cut.py [--intervals 60 300 900 3600] [--machines 3] [--cuts 8]

Pumps (runtime.tools.demo.simulator, 1 Hz; healthy ones, and ones whose valve starts closing 300 s
before the first cut, so an alert is open at every cut) are stepped through the demo model (a
1x32 LSTM forecaster, int8) by a real Engine, one sample per message: the fault-free reference.
At a "cut" at second c, the state saved one interval earlier is restored into a new Engine
(what a restart finds on disk; the engine re-warms a stream whose next seq shows a gap), the
samples acked since then are lost, and the stream goes on from c. The same stream restarted
with no state at all (no checkpoint) is the other case. Per case it prints, over every cut:

- steps until the score is back within 1% of the threshold of the reference and stays there,
- steps whose alert decision (raised or not) differs from the reference's,
- alert messages (id, state) the reference sent in the window and the restarted stream did
  not, and the other way round (an alert re-raised under a new id leaves the old one open).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root: tests.support helpers

from edge_config.schema import ModelConfig, TargetConfig
from runtime.engine.alerts import Alert
from runtime.engine.engine import Engine
from runtime.engine.types import InferenceBackend, Message
from runtime.model.artifact import Artifact, load_artifact
from runtime.model.session import create_session
from runtime.state.transfer import restore_engine, snapshot_columns, snapshot_engine
from runtime.tools.demo.simulator import Failure, Machine, simulate

DEMO_MODEL = Path(__file__).resolve().parents[1] / "runtime" / "tools" / "demo" / "model"
WINDOW = 900  # steps compared after each cut


def _engine(artifact: Artifact, session: InferenceBackend, path: Path) -> Engine:
    return Engine(artifact, session, ModelConfig(path=path, target="cpu"), name="demo")


def _step(engine: Engine, values: np.ndarray, ts: np.ndarray, seq: int) -> tuple[float, bool, list[Alert]]:
    outcome = engine.process([Message("pump", values[None, :], seq, ts[None], 0.0, 0.0)])[0]
    slot = engine.store.slot("pump")
    assert outcome.scores is not None
    assert slot is not None
    return float(outcome.scores[0]), engine.tracker.is_raised(slot), outcome.alerts


def _converged_after(diff: np.ndarray, tolerance: float) -> int:
    """Steps until |diff| <= tolerance for good (NaN counts as not converged)."""
    bad = np.flatnonzero(~(np.abs(diff) <= tolerance))
    return 0 if bad.size == 0 else int(bad[-1]) + 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--intervals", type=int, nargs="+", default=[60, 300, 900, 3600])
    parser.add_argument("--machines", type=int, default=3)
    parser.add_argument("--cuts", type=int, default=8, help="cut points per machine")
    args = parser.parse_args(argv)
    artifact = load_artifact(DEMO_MODEL)
    session, _ = create_session(artifact, TargetConfig(type="cpu"), name="demo")
    tolerance = 0.01 * _engine(artifact, session, DEMO_MODEL).threshold
    first_cut = max(args.intervals) + 600
    steps = first_cut + args.cuts * 600 + WINDOW
    machines = [(f"healthy-{m}", Machine(f"pump-{m}", seed=100 + m)) for m in range(args.machines)]
    machines += [
        (
            f"valve-closing-{m}",
            Machine(f"pump-{m}", seed=200 + m, failure=Failure("valve-closing", start_s=first_cut - 300, ramp_s=60)),
        )
        for m in range(args.machines)
    ]
    results: dict[tuple[str, str], list[tuple[int, int, int, int]]] = {}
    for kind, machine in machines:
        rec = simulate(machine, steps)
        cuts = [first_cut + k * 600 for k in range(args.cuts)]
        wanted = {c - i for c in cuts for i in args.intervals}
        reference = _engine(artifact, session, DEMO_MODEL)
        scores, raised, saved = np.empty(steps), np.zeros(steps, dtype=bool), {}
        sent: list[set[tuple[str, str]]] = [set() for _ in range(steps)]
        for t in range(steps):
            if t in wanted:
                saved[t] = snapshot_engine(reference)  # the checkpoint on disk at second t
            scores[t], raised[t], alerts = _step(reference, rec.values[t], rec.ts[t], t)
            sent[t] = {(a.id, a.state) for a in alerts}
        for c in cuts:
            cases = [(f"restored, {i} s old", saved[c - i]) for i in args.intervals] + [("no state", None)]
            expected = set().union(*sent[c : c + WINDOW])
            for label, snapshot in cases:
                engine = _engine(artifact, session, DEMO_MODEL)
                if snapshot is not None:
                    restore_engine(engine, snapshot.streams, snapshot_columns(snapshot), 0.0, restart=True)
                after = [_step(engine, rec.values[t], rec.ts[t], t) for t in range(c, c + WINDOW)]
                s = np.array([a[0] for a in after])
                r = np.array([a[1] for a in after])
                got = {(x.id, x.state) for a in after for x in a[2]}
                results.setdefault((kind.rsplit("-", 1)[0], label), []).append(
                    (
                        _converged_after(s - scores[c : c + WINDOW], tolerance),
                        int(np.count_nonzero(r != raised[c : c + WINDOW])),
                        len(expected - got),
                        len(got - expected),
                    )
                )
    print(
        f"demo model, {args.machines} machines of each kind x {args.cuts} cuts, {WINDOW} steps compared after "
        f"each cut, tolerance {tolerance:.4f} (1% of the threshold)"
    )
    for (kind, label), rows in results.items():
        conv = [r[0] for r in rows]
        print(
            f"{kind:>13} {label:>20}: score within tolerance after median {statistics.median(conv):.0f} steps "
            f"(max {max(conv)}); alert decisions differing in {sum(r[1] for r in rows)} of {len(rows) * WINDOW} "
            f"steps; alert messages missing {sum(r[2] for r in rows)}, extra {sum(r[3] for r in rows)}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
