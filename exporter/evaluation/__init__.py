"""Evaluating the detector on SKAB the way a gateway runs it (`edgewatch eval skab`).

The names are imported on first use (PEP 562): running the detector needs torch and
plotting needs matplotlib, which `import exporter.evaluation` does not load.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from runtime._lazy import lazy_exports as _lazy_exports

if TYPE_CHECKING:
    from exporter.evaluation.metrics import Confusion, confusion, nab_score
    from exporter.evaluation.report import format_table, metrics, plot_results, write_json
    from exporter.evaluation.skab import SkabError, SkabFile, load_anomaly_free, load_labelled, resolve_skab_dir
    from exporter.evaluation.skab_eval import (
        PUBLISHED,
        STREAMING,
        DetectorConfig,
        FileResult,
        SettingResult,
        run_published,
        run_streaming,
    )

__all__ = [
    "PUBLISHED",
    "STREAMING",
    "Confusion",
    "DetectorConfig",
    "FileResult",
    "SettingResult",
    "SkabError",
    "SkabFile",
    "confusion",
    "format_table",
    "load_anomaly_free",
    "load_labelled",
    "metrics",
    "nab_score",
    "plot_results",
    "resolve_skab_dir",
    "run_published",
    "run_streaming",
    "write_json",
]

_WHERE = {
    **dict.fromkeys(("Confusion", "confusion", "nab_score"), "exporter.evaluation.metrics"),
    **dict.fromkeys(("format_table", "metrics", "plot_results", "write_json"), "exporter.evaluation.report"),
    **dict.fromkeys(
        ("SkabError", "SkabFile", "load_anomaly_free", "load_labelled", "resolve_skab_dir"), "exporter.evaluation.skab"
    ),
    **dict.fromkeys(
        ("PUBLISHED", "STREAMING", "DetectorConfig", "FileResult", "SettingResult", "run_published", "run_streaming"),
        "exporter.evaluation.skab_eval",
    ),
}

__getattr__ = _lazy_exports(__name__, _WHERE)


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
