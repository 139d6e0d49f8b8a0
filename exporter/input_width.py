"""The model's input width, found from the module itself: `--features` only names or overrides it.

The first layer that consumes x need not be recurrent (a Linear projection, an MLP, a Conv1d
stem, a hand-written cell). The candidates are the input widths every layer declares, in
module order (`in_features`, `in_channels`, `input_size`, a LayerNorm's last dimension); the
width is the first candidate the module's forward accepts as x [batch, time, width] or
[time, batch, width]. When no declared width fits (a hand-written cell that concatenates x
with its state, say), the widths 1..SEARCH_LIMIT are tried in order. The streaming probes then
verify the layout in full.

torch is imported when the search runs (only the export path runs it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn

_ATTRIBUTES = ("in_features", "in_channels", "input_size")
SEARCH_LIMIT = 256
"""The widest input the last-resort search tries."""
_PROBE = (5, 11)  # batch != time: either layout gets a distinct shape


@dataclass(frozen=True)
class InputWidth:
    width: int
    how: str
    """How it was found, in words, for the export log."""


def _candidates(model: nn.Module) -> list[tuple[int, str]]:
    from torch import nn

    seen: set[int] = set()
    found: list[tuple[int, str]] = []
    for name, module in model.named_modules():
        widths = [getattr(module, a, None) for a in _ATTRIBUTES]
        if isinstance(module, nn.LayerNorm):
            widths.append(module.normalized_shape[-1])
        for width in widths:
            if isinstance(width, int) and width > 0 and width not in seen:
                seen.add(width)
                found.append((width, name or "<root>"))
    return found


def _accepts(model: nn.Module, width: int) -> bool:
    import torch

    for shape in (_PROBE, _PROBE[::-1]):
        try:
            with torch.no_grad():
                model(torch.zeros(*shape, width))
        except Exception:  # noqa: BLE001 - a wrong width makes the user's forward raise anything
            continue
        return True
    return False


def find_input_width(model: nn.Module) -> InputWidth | None:
    """The first declared layer width the module accepts as its input, or None when none does."""
    was_training = model.training
    model.eval()
    try:
        candidates = _candidates(model)
        for width, layer in candidates:
            if _accepts(model, width):
                return InputWidth(width, f"declared by {layer}, accepted by forward()")
        tried = {width for width, _ in candidates}
        for width in range(1, SEARCH_LIMIT + 1):
            if width not in tried and _accepts(model, width):
                return InputWidth(width, "the smallest width forward() accepts; no layer declares one it accepts")
        return None
    finally:
        model.train(was_training)
