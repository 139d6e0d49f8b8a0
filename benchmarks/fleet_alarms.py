"""False alerts on a heterogeneous healthy fleet, and how fast a modest fault is caught.

    .venv/bin/python benchmarks/fleet_alarms.py [--machines 20] [--steps 1500] [--fleet-seed 1] [--sigmas 2]
        [--learn-steps 300 ...] [--level-steps 200] [--bias-h 12] [--policy max|stream] [--model DIR]
        [--threshold T] [--learning-factor 5] [--learning-ratio 5]

Simulated pumps (runtime.tools.demo.simulator) whose readings differ from the rig the model was
trained on (Variation.random: offsets, gains, noise, phase), served through the gateway's own
Engine with the model's exported threshold (or --threshold) and the configured per-stream
baselines; one more machine gets a step change of 2 standard deviations on three sensors at
--shift-at. Prints, per setting: healthy machines that raised, false alerts per 100,000
stream-steps, and the faulty machine's delay. Fleet seeds 1-6 are the development fleets the
scales and the CUSUM were chosen on, 11-16 their held-out set; the bias detector was chosen on
1-6 and 11-16, and 21-30 are its held-out set; 31-40 a second held-out set, run once with the
same defaults; the learning rule (learning_factor, learning_ratio) was chosen on 1-40, and 41-60
are its held-out set (docs/BASELINES.md; tests/unit/test_fleet_alarms.py runs 11-14).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root when run as a script

from edge_config.schema import BaselineConfig
from runtime.tools.demo.fleet import MODEL_DIR
from runtime.tools.demo.fleet_replay import fleet_recordings, raised_alerts


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, default=MODEL_DIR)
    p.add_argument("--machines", type=int, default=20)
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--shift-at", type=int, default=900)
    p.add_argument("--sigmas", type=float, default=2.0, help="the step change, in healthy standard deviations")
    p.add_argument("--fleet-seed", type=int, nargs="+", default=[1])
    p.add_argument("--learn-steps", type=int, nargs="+", default=[0, 600])
    p.add_argument(
        "--level-steps", type=int, default=BaselineConfig().level_steps, help="0: no CUSUM against the stream's level"
    )
    p.add_argument(
        "--bias-h", type=float, default=BaselineConfig().bias_h, help="0: no step-change detector on the signed errors"
    )
    p.add_argument("--policy", default="max", choices=["max", "stream"])
    p.add_argument("--learning-factor", type=float, default=BaselineConfig().learning_factor)
    p.add_argument("--learning-ratio", type=float, default=BaselineConfig().learning_ratio)
    p.add_argument("--threshold", type=float, default=None, help="override the manifest's threshold")
    p.add_argument("--ewma-alpha", type=float, default=None, help="override the manifest's score smoothing")
    args = p.parse_args()
    print(f"{'seed':>4} {'learn':>6} {'healthy raised':>15} {'false/100k':>10} {'delay':>6}")
    for seed in args.fleet_seed:
        recordings = fleet_recordings(args.machines, args.steps, seed, shift_at=args.shift_at, sigmas=args.sigmas)
        for learn in args.learn_steps:
            baseline = BaselineConfig(
                learn_steps=learn,
                level_steps=args.level_steps,
                bias_h=args.bias_h,
                policy=args.policy,
                learning_factor=args.learning_factor,
                learning_ratio=args.learning_ratio,
            )
            raised = raised_alerts(
                args.model, recordings, baseline, threshold=args.threshold, ewma_alpha=args.ewma_alpha
            )
            healthy = {n: r for n, r in raised.items() if n != "faulty"}
            false = sum(map(len, healthy.values()))
            after = [s for s in raised["faulty"] if s >= args.shift_at]
            early = [s for s in raised["faulty"] if s < args.shift_at]
            delay = str(after[0] - args.shift_at) if after else "miss"
            per_100k = false / (args.machines * args.steps) * 100_000
            print(
                f"{seed:>4} {learn:>6} {sum(1 for r in healthy.values() if r):>9} of {args.machines:<3}"
                f" {per_100k:>10.1f} {delay:>6}" + (f"  (faulty raised early at {early})" if early else "")
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
