"""The demo's summary: one row per machine, with the verdict that decides the exit code
(the failing pump must alert after its failure starts, no healthy pump may alert at all)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from runtime.tools.demo.simulator import Machine
from runtime.tools.demo.watch import SeenAlert


@dataclass(frozen=True)
class MachineResult:
    machine: Machine
    samples: int
    """Distinct samples published for it."""
    raised_at: tuple[int, ...]
    """Simulated second (seq) of every `raised` alert, in order."""
    cleared: int
    status: str
    """Its last retained status (`-` if the daemon never published one)."""

    @property
    def onset(self) -> int | None:
        return None if self.machine.failure is None else self.machine.failure.start_s

    def verdict(self) -> tuple[bool, str]:
        """(as expected?, why) — the demo is also a check."""
        if self.onset is None:
            if self.raised_at:
                return False, f"FALSE ALERT at t={self.raised_at[0]}s"
            return True, "ok: healthy, no alert"
        early = [s for s in self.raised_at if s < self.onset]
        if early:
            return False, f"FALSE ALERT at t={early[0]}s, before the failure began"
        if not self.raised_at:
            return False, "MISSED: the failure raised no alert"
        return True, f"ok: failure caught {self.raised_at[0] - self.onset} s after onset"


def machine_results(
    fleet: Sequence[Machine], alerts: Sequence[SeenAlert], sent: Mapping[str, int], status: Mapping[str, str]
) -> list[MachineResult]:
    results = []
    for machine in fleet:
        mine = [a for a in alerts if a.stream == machine.name]
        raised = tuple(a.seq if a.seq is not None else -1 for a in mine if a.state == "raised")
        cleared = sum(a.state == "cleared" for a in mine)
        results.append(
            MachineResult(machine, sent.get(machine.name, 0), raised, cleared, status.get(machine.name, "-"))
        )
    return results


def format_summary(results: Sequence[MachineResult]) -> str:
    header = ("machine", "failure", "samples", "raised", "cleared", "first alert", "status", "result")
    rows = [header]
    for r in results:
        f = r.machine.failure
        first = f"t={r.raised_at[0]}s" if r.raised_at else "-"
        rows.append(
            (
                r.machine.name,
                f"{f.kind} from t={f.start_s}s" if f else "-",
                str(r.samples),
                str(len(r.raised_at)),
                str(r.cleared),
                first,
                r.status,
                r.verdict()[1],
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)) + "  " + row[-1] for row in rows
    )
