"""Where a user's module keeps its recurrent state: the sites the streaming wrapper feeds.

Two shapes of recurrence, one abstraction (`RecurrentSite`):

- sequence sites, called once per forward over the whole sequence: `nn.LSTM`, `nn.GRU`
  (state [layers, batch, hidden]), and a causal `nn.Conv1d` over time (state: its last
  P = dilation·(kernel−1) input frames, [P, batch, in_channels]). A Conv1d is taken as causal
  when its stride is 1, its padding mode zeros and its padding either 0 (the module pads the
  left itself, `F.pad(x, (P, 0))`) or P (the module cuts the P extra frames off the right end);
  gate 2 proves it, and refuses it when it is not.
- step sites, called once per time step inside the user's own time loop: `nn.LSTMCell`,
  `nn.GRUCell`, and any module that declares its state (the step protocol below); each
  state tensor is [batch, size] in the module and [1, batch, size] in the graph, so every
  state the gateway carries has the same [layers, batch, hidden] shape and batch axis 1.

The step protocol (docs/EXPORT.md): a module with

    state_sizes: dict[str, int]      # or a method returning it: state name → width
    def step(self, x_t, state):      # x_t [batch, in], state {name: [batch, size]}
        return y_t, new_state        # new_state: a dict with the same names

whose `forward` (its own, or its parent's) calls `step` once per time step, starting from
whatever state it likes (the exporter feeds the first call's state). Modules inside such a
module are its business: they are not sites of their own. A step module that also declares
`onnx_lstm_weights()` is exported as one ONNX LSTM node per step (exporter.fused_cell).

torch is imported by `find_recurrent` when it runs, so the site type can be named anywhere.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from edge_config.errors import UnsupportedModelError
from exporter.fused_cell import declares_lstm

if TYPE_CHECKING:
    from torch import nn

SiteKind = Literal["lstm", "gru", "conv", "lstm_cell", "gru_cell", "step"]
StateKind = Literal["lstm_h", "lstm_c", "gru_h", "cell", "frames"]

SUPPORTED = "nn.LSTM, nn.GRU, nn.LSTMCell, nn.GRUCell, or a module with step() and state_sizes (docs/EXPORT.md)"


@dataclass(frozen=True)
class RecurrentSite:
    """One recurrent module of the user's model, by its dotted name ("" for the root)."""

    name: str
    kind: SiteKind
    input_size: int
    hidden: int
    """Width of each state tensor of an LSTM/GRU/cell (a step module's widths are in `state`)."""
    layers: int = 1
    batch_first: bool = True
    """Sequence sites only: the layout the module itself expects."""
    state: tuple[tuple[str, int], ...] = ()
    """Step modules only: the declared (name, width) of each state tensor, in declaration order."""
    pads_itself: bool = False
    """Conv sites only: the Conv1d's own padding is P (the module cuts the right end off)."""
    fused: bool = False
    """Step modules only: it declares onnx_lstm_weights(), so each step is one ONNX LSTM node
    (exporter.fused_cell)."""

    @property
    def per_step(self) -> bool:
        """True when the site is called once per time step (the graph then holds one step)."""
        return self.kind not in ("lstm", "gru", "conv")

    @property
    def label(self) -> str:
        return self.name or "model"

    def state_names(self) -> list[tuple[str, str, StateKind]]:
        """(graph input, graph output, StateSpec.kind) per state tensor, in wrapper order."""
        if self.kind == "step":
            return [(f"{key}0.{self.label}", f"{key}n.{self.label}", "cell") for key, _ in self.state]
        if self.kind == "conv":
            return [(f"frames0.{self.label}", f"framesn.{self.label}", "frames")]
        h: StateKind = "lstm_h" if self.kind in ("lstm", "lstm_cell") else "gru_h"
        names = [(f"h0.{self.label}", f"hn.{self.label}", h)]
        if self.kind in ("lstm", "lstm_cell"):
            names.append((f"c0.{self.label}", f"cn.{self.label}", "lstm_c"))
        return names

    def state_shapes(self) -> list[tuple[int, int]]:
        """(layers, width) of each graph state tensor, in `state_names` order."""
        if self.kind == "step":
            return [(1, size) for _, size in self.state]
        return [(self.layers, self.hidden)] * len(self.state_names())

    def describe(self) -> str:
        if self.kind == "step":
            widths = ", ".join(f"{k} {n}" for k, n in self.state)
            fused = "; one ONNX LSTM node per step, from onnx_lstm_weights()" if self.fused else ""
            return f"{self.label} (step module; state {widths}{fused})"
        if self.kind == "conv":
            return f"{self.label} (causal Conv1d over time; carries its last {self.layers} input frames)"
        if self.per_step:
            cell = "LSTMCell" if self.kind == "lstm_cell" else "GRUCell"
            return f"{self.label} ({cell} {self.hidden}, stepped in the module's time loop)"
        return f"{self.label} ({self.kind.upper()} {self.layers}×{self.hidden})"


def declared_state(module: nn.Module) -> dict[str, int] | None:
    """The step protocol's state_sizes, or None when `module` does not follow the protocol."""
    step, sizes = getattr(module, "step", None), getattr(module, "state_sizes", None)
    if not callable(step) or sizes is None:
        return None
    if callable(sizes):
        sizes = sizes()
    if (
        not isinstance(sizes, Mapping)
        or not sizes
        or not all(isinstance(k, str) and k.isidentifier() and isinstance(v, int) and v > 0 for k, v in sizes.items())
    ):
        raise UnsupportedModelError(
            f"{type(module).__name__}.state_sizes must map state names (identifiers) to positive widths, got {sizes!r}"
        )
    return dict(sizes)


def _sequence_site(name: str, module: Any, kind: SiteKind) -> RecurrentSite:
    if not name:
        raise UnsupportedModelError("the model is a bare nn.LSTM/nn.GRU: wrap it in a module with a head")
    if module.bidirectional:
        raise UnsupportedModelError(
            f"{name}: bidirectional {type(module).__name__} reads the future and cannot be streamed one step at a time"
        )
    if getattr(module, "proj_size", 0) > 0:
        raise UnsupportedModelError(
            f"{name}: LSTM with proj_size={module.proj_size} (LSTMP) is not supported: "
            "ONNX Runtime cannot run it; use proj_size=0 and a Linear layer instead"
        )
    return RecurrentSite(name, kind, module.input_size, module.hidden_size, module.num_layers, module.batch_first)


def _conv_site(name: str, conv: Any) -> RecurrentSite | None:
    """The Conv1d as a causal convolution over time, or None when it needs no state or cannot be one."""
    frames = conv.dilation[0] * (conv.kernel_size[0] - 1)
    if frames == 0 or conv.stride[0] != 1 or conv.padding_mode != "zeros" or conv.padding == "same":
        return None
    padding: int = 0 if conv.padding == "valid" else conv.padding[0]
    if padding not in (0, frames):
        return None  # symmetric or other padding: not causal; gate 2 tells the user
    return RecurrentSite(name, "conv", conv.in_channels, conv.in_channels, frames, pads_itself=padding == frames)


def find_recurrent(model: nn.Module) -> list[RecurrentSite]:
    """Every recurrent site of `model`, in module order; refuse what cannot be streamed."""
    from torch import nn

    sequence: dict[type[nn.Module], SiteKind] = {nn.LSTM: "lstm", nn.GRU: "gru"}
    cells: dict[type[nn.Module], SiteKind] = {nn.LSTMCell: "lstm_cell", nn.GRUCell: "gru_cell"}
    sites: list[RecurrentSite] = []
    inside: list[str] = []  # step modules found so far: their descendants are not sites
    for name, module in model.named_modules():
        if any(name.startswith(f"{p}.") or not p for p in inside):
            continue
        sizes = declared_state(module)
        if sizes is not None:
            fused = declares_lstm(module, sizes)
            sites.append(RecurrentSite(name, "step", 0, 0, state=tuple(sizes.items()), fused=fused))
            inside.append(name)
            continue
        if type(module) in sequence:
            sites.append(_sequence_site(name, module, sequence[type(module)]))
        elif isinstance(module, nn.Conv1d) and (conv := _conv_site(name, module)) is not None:
            sites.append(conv)
        elif type(module) in cells:
            cell: Any = module
            sites.append(RecurrentSite(name, cells[type(module)], cell.input_size, cell.hidden_size))
        elif isinstance(module, (nn.RNNBase, nn.RNNCellBase)):
            raise UnsupportedModelError(
                f"module {name or '<root>'!r} is a {type(module).__name__}: supported are {SUPPORTED}"
            )
    if all(site.kind == "conv" for site in sites):
        raise UnsupportedModelError(f"the model contains no recurrent module to stream ({SUPPORTED})")
    return sites
