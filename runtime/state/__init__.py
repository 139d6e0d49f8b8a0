"""Per-stream state beyond the process: checkpoint format and files, the writer thread, the schedule,
and the transfer of state between engines.
"""

from typing import TYPE_CHECKING

from runtime._lazy import lazy_exports as _lazy_exports

if TYPE_CHECKING:
    from runtime.state.checkpoint import LoadResult, load_checkpoint, model_checkpoint_path, write_checkpoint
    from runtime.state.format import StateLayout, StateSnapshot
    from runtime.state.schedule import Checkpointing
    from runtime.state.transfer import Restored, restore_engine, snapshot_engine, transfer_state
    from runtime.state.writer import CheckpointStats, CheckpointWriter

__all__ = [
    "CheckpointStats",
    "CheckpointWriter",
    "Checkpointing",
    "LoadResult",
    "Restored",
    "StateLayout",
    "StateSnapshot",
    "load_checkpoint",
    "model_checkpoint_path",
    "restore_engine",
    "snapshot_engine",
    "transfer_state",
    "write_checkpoint",
]

__getattr__ = _lazy_exports(
    __name__,
    {
        "CheckpointStats": "runtime.state.writer",
        "CheckpointWriter": "runtime.state.writer",
        "Checkpointing": "runtime.state.schedule",
        "LoadResult": "runtime.state.checkpoint",
        "Restored": "runtime.state.transfer",
        "StateLayout": "runtime.state.format",
        "StateSnapshot": "runtime.state.format",
        "load_checkpoint": "runtime.state.checkpoint",
        "model_checkpoint_path": "runtime.state.checkpoint",
        "restore_engine": "runtime.state.transfer",
        "snapshot_engine": "runtime.state.transfer",
        "transfer_state": "runtime.state.transfer",
        "write_checkpoint": "runtime.state.checkpoint",
    },
)
