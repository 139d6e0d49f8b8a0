"""`edgewatch demo`: the whole job on the embedded default, end to end, in about half a minute.

    private mosquitto → gateway.yaml (shipped model) → `edgewatch serve` (child process, `online`)
    → simulated pumps publish over MQTT (one's valve closes) → alerts printed live
    → every sample processed → SIGTERM (`stopped`) → broker stopped → summary + plots

The exit status makes the demo a check: 0 only if the failing pump raised an alert after its
failure began, no healthy pump raised one, the daemon processed every sample and stopped cleanly.
"""

from __future__ import annotations

import argparse
import shutil
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from edge_config.errors import ConfigError, EdgewatchError
from runtime.tools.demo.console import Console
from runtime.tools.demo.daemon import Daemon
from runtime.tools.demo.fleet import DEMO_STEPS, MAX_DURATION_S, MODEL_DIR, fleet
from runtime.tools.demo.gateway import TOPIC_FILTER, DemoGateway, input_topic, write_gateway
from runtime.tools.demo.plotting import PLOTS_MISSING, plots_available, write_plots
from runtime.tools.demo.publisher import FleetPublisher
from runtime.tools.demo.report import MachineResult, format_summary, machine_results
from runtime.tools.demo.simulator import Failure, Machine, Recording, simulate
from runtime.tools.demo.watch import SeenAlert, Watcher

MOSQUITTO_MISSING = "mosquitto is not installed: apt-get install -y mosquitto mosquitto-clients (or run bash .ci/setup)"
_SBIN_MOSQUITTO = Path("/usr/sbin/mosquitto")  # Debian installs it outside a user's PATH
_ONLINE_TIMEOUT_S = 30.0
_HANDSHAKE_TIMEOUT_S = 15.0
_DRAIN_TIMEOUT_S = 60.0  # after the last publication, for the daemon to catch up
_STOPPED_TIMEOUT_S = 10.0
_PROGRESS_LINES = 10  # about this many progress lines per run, at whole simulated minutes


def require_mosquitto() -> None:
    """EdgewatchError with the install hint when the mosquitto binary cannot be found."""
    if shutil.which("mosquitto") is None and not _SBIN_MOSQUITTO.exists():
        raise EdgewatchError(MOSQUITTO_MISSING)


@dataclass(frozen=True)
class _Plan:
    machines: tuple[Machine, ...]
    failing: Machine
    failure: Failure
    duration: int
    speed: float
    recordings: dict[str, Recording]


@dataclass(frozen=True)
class _Rig:
    """The running parts, each registered for cleanup as it started."""

    gateway: DemoGateway
    publisher: FleetPublisher
    watcher: Watcher
    daemon: Daemon


@dataclass(frozen=True)
class _Ending:
    processed: int
    expected: int
    exit_code: int | None
    stopped: bool
    results: list[MachineResult]
    alerts: list[SeenAlert]


def _plan(args: argparse.Namespace) -> _Plan:
    try:
        machines = fleet(args.machines)
    except ValueError as exc:
        raise ConfigError(f"--machines: {exc}") from None
    failing = next(m for m in machines if m.failure is not None)
    assert failing.failure is not None
    onset = failing.failure.start_s
    duration = DEMO_STEPS if args.duration is None else args.duration
    if not onset + 60 <= duration <= MAX_DURATION_S:
        raise ConfigError(
            f"--duration must be {onset + 60}..{MAX_DURATION_S} simulated seconds "
            f"(the failure begins at t={onset}s), not {duration}"
        )
    if not args.speed > 0:
        raise ConfigError(f"--speed must be > 0 simulated seconds per wall second, not {args.speed}")
    if args.out.exists() and not args.out.is_dir():
        raise ConfigError(f"--out {args.out} exists and is not a folder")
    t0 = float(int(time.time()))  # simulated time starts now, so alert timestamps look current
    recordings = {m.name: simulate(m, duration, t0=t0) for m in machines}
    return _Plan(machines, failing, failing.failure, duration, float(args.speed), recordings)


def run(args: argparse.Namespace) -> int:
    console = Console(time.monotonic())
    plan = _plan(args)
    require_mosquitto()
    console.line(
        f"edgewatch demo: {len(plan.machines)} simulated pumps, {plan.duration} s of simulated time at "
        f"{plan.speed:g}x (about {plan.duration / plan.speed:.0f} s of streaming); {plan.failing.name}'s "
        f"{plan.failure.kind.replace('-', ' ')} begins at t={plan.failure.start_s}s"
    )
    out: Path = args.out
    with ExitStack() as cleanup:
        rig = _bring_up(plan, out, console, cleanup)
        _stream(rig, plan, console)
        ending = _shut_down(rig, plan, console)
        cleanup.close()  # the broker too, before the summary: everything is down when it prints
        console.line(f"broker stopped; everything shut down after {console.elapsed():.1f} s")
    console.line()
    console.line(format_summary(ending.results))
    console.line()
    _plots(console, out, rig.gateway, plan, ending.alerts)
    return _verdict(console, plan, rig, ending)


def _bring_up(plan: _Plan, out: Path, console: Console, cleanup: ExitStack) -> _Rig:
    from runtime.model.artifact import load_artifact
    from runtime.tools.local_broker import start_broker

    manifest = load_artifact(MODEL_DIR).manifest
    try:
        broker = start_broker(out / "broker")
    except RuntimeError as exc:  # it did not start or listen: say why in one line
        raise EdgewatchError(str(exc)) from None
    cleanup.callback(broker.stop)
    console.line(f"  broker     mosquitto on {broker.address} (private; conf and log in {out / 'broker'})")
    gateway = write_gateway(out, host=broker.host, port=broker.port, model_dir=MODEL_DIR, manifest=manifest)
    console.line(f"  config     {gateway.path} (model {gateway.model_name}, int8, copied to {out / 'model'})")
    console.line(f"  threshold  {gateway.alerting()}")
    prefix = gateway.config.runtime.topic_prefix
    topics = {m.name: input_topic(m.name) for m in plan.machines}
    publisher = FleetPublisher(gateway.config.broker, plan.recordings, topics)
    watcher = Watcher(gateway.config.broker, prefix, on_alert=lambda a: console.alert(a, publisher.sent_at))
    watcher.start()  # before the daemon: `online` and every alert are seen
    cleanup.callback(watcher.close)
    daemon = Daemon(gateway.path, out / "serve.log")
    pid = daemon.start()
    cleanup.callback(daemon.stop)
    if not watcher.wait(lambda: "online" in watcher.available(), _ONLINE_TIMEOUT_S, _alive(daemon)):
        console.error(daemon.log_tail())
        raise EdgewatchError(f"the daemon did not come online (exit {daemon.exit_code()}); log: {daemon.log}")
    console.line(
        f"  daemon     edgewatch serve --config {gateway.path} (pid {pid}, log {daemon.log}): "
        f"'online' on {prefix}/available after {console.elapsed():.1f} s"
    )
    publisher.connect()
    cleanup.callback(publisher.close)
    _handshake(publisher, watcher, list(topics))
    console.line(
        f"  streaming  {TOPIC_FILTER}, 1 JSON sample per machine per simulated second; alerts on {prefix}/alerts/#"
    )
    return _Rig(gateway, publisher, watcher, daemon)


def _alive(daemon: Daemon) -> Callable[[], bool]:
    return lambda: daemon.exit_code() is None


def _answered(watcher: Watcher, names: list[str]) -> Callable[[], bool]:
    """Whether the daemon has published a status for every one of `names`."""
    return lambda: all(n in watcher.status() for n in names)


def _handshake(publisher: FleetPublisher, watcher: Watcher, names: list[str]) -> None:
    """Send every machine's first sample until the daemon answers with its status.

    `online` comes before the daemon's subscriptions are confirmed, and a sample published in
    between would be lost; seq makes a resent sample harmless (the daemon drops the repeat)."""
    deadline = time.monotonic() + _HANDSHAKE_TIMEOUT_S
    missing = list(names)
    while missing:
        if time.monotonic() > deadline:
            raise EdgewatchError(
                f"the daemon did not answer the first sample of {', '.join(missing)} within {_HANDSHAKE_TIMEOUT_S:.0f}s"
            )
        publisher.publish_step(0, missing)
        watcher.wait(_answered(watcher, missing), 0.5)
        missing = [n for n in names if n not in watcher.status()]


def _stream(rig: _Rig, plan: _Plan, console: Console) -> None:
    console.line()
    console.header()
    every = 60 * max(1, round(plan.duration / 60 / _PROGRESS_LINES))

    def before_step(step: int) -> None:
        if step == plan.failure.start_s:
            console.event(
                plan.failing.name,
                "(truth)",
                step,
                f"the {plan.failure.kind.replace('-', ' ')} begins; nobody tells the daemon",
            )
        if step % every == 0:
            if rig.daemon.exit_code() is not None:  # no point streaming on: say why now
                console.error(rig.daemon.log_tail())
                raise EdgewatchError(
                    f"the daemon exited ({rig.daemon.exit_code()}) while the fleet streamed; log: {rig.daemon.log}"
                )
            states = list(rig.watcher.status().values())
            counts = ", ".join(f"{states.count(s)} {s}" for s in sorted(set(states)))
            console.event(
                "fleet",
                "progress",
                step,
                f"{sum(rig.publisher.sent.values())} samples sent; daemon's "
                f"last stats: {rig.watcher.processed()} processed; status: {counts}",
            )

    rig.publisher.stream(1, plan.speed, before_step)
    rig.publisher.confirm()


def _shut_down(rig: _Rig, plan: _Plan, console: Console) -> _Ending:
    """Wait until every sample was processed, then SIGTERM the daemon and wait for `stopped`."""
    watcher = rig.watcher
    expected = len(plan.machines) * plan.duration
    watcher.wait(lambda: watcher.processed() >= expected, _DRAIN_TIMEOUT_S, _alive(rig.daemon))
    processed = watcher.processed()
    code = rig.daemon.stop()
    stopped = watcher.wait(lambda: watcher.available()[-1:] == ["stopped"], _STOPPED_TIMEOUT_S)
    prefix = watcher.prefix
    console.line()
    console.line(
        f"the daemon processed {processed} of {expected} samples; SIGTERM → exit {code}, "
        f"{'stopped' if stopped else 'NOT stopped'} on {prefix}/available"
    )
    alerts = watcher.alerts()
    results = machine_results(plan.machines, alerts, rig.publisher.sent, watcher.status())
    return _Ending(processed, expected, code, stopped, results, alerts)


def _plots(console: Console, out: Path, gateway: DemoGateway, plan: _Plan, alerts: list[SeenAlert]) -> None:
    if not plots_available():
        console.line(PLOTS_MISSING)
        return
    shown = [plan.failing, next(m for m in plan.machines if m.failure is None)]
    paths = write_plots(out, gateway.config, gateway.model_name, shown, plan.recordings, alerts, gateway.threshold)
    for machine, path in zip(shown, paths, strict=False):
        what = "failing: true failure in red" if machine.failure else "healthy"
        console.line(f"plot: {path}  ({what}; sensors, score vs threshold, published alerts in orange)")


def _verdict(console: Console, plan: _Plan, rig: _Rig, ending: _Ending) -> int:
    problems = [f"{r.machine.name}: {r.verdict()[1]}" for r in ending.results if not r.verdict()[0]]
    if ending.processed < ending.expected:
        problems.append(f"the daemon processed {ending.processed} of {ending.expected} samples")
    if ending.exit_code != 0 or not ending.stopped:
        problems.append(f"the daemon did not stop cleanly (exit {ending.exit_code}; see {rig.daemon.log})")
    problems += [f"not understood: {bad}" for bad in rig.watcher.not_understood()]
    took = console.elapsed()
    if problems:
        console.line(f"demo FAILED after {took:.1f} s: " + "; ".join(problems))
        return 1
    console.line(
        f"demo passed in {took:.1f} s: {plan.failing.name} alerted after its failure began, no healthy pump alerted"
    )
    return 0
