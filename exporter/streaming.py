"""Make a user's module streamable: its recurrent state becomes explicit inputs and outputs.

The user's `forward(x)` takes no state. Every nn.LSTM / nn.GRU inside it gets a forward
pre-hook that replaces its `hx` with a tensor fed to the wrapper, and a forward hook that
collects its final state. `StreamingWrapper.forward(x, *states) -> (y, *next_states)` is
what gets exported:

- x: [batch, time, features] always (transposed inside when the model is time-major);
- states: per site, LSTM → h, c; GRU → h; each [layers, batch, hidden] (batch axis 1);
- y: [batch, time, n] (`output_kind == "sequence"`) or [batch, n] (`"last"`).

The layouts are found by probing with two (batch, time) pairs, never guessed from names.

This module defines an nn.Module, so it imports torch at import time: only the export path
(`exporter.cli.run`, lazily) imports it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from edge_config.errors import UnsupportedModelError
from edge_config.manifest import OutputKind

StateKind = Literal["lstm_h", "lstm_c", "gru_h"]

# Two probes with distinct batch and time sizes (and batch != time) tell every axis apart.
_PROBES = ((5, 11), (6, 13))


@dataclass(frozen=True)
class RecurrentSite:
    """One nn.LSTM / nn.GRU of the user's module, by its dotted name."""

    name: str
    kind: Literal["lstm", "gru"]
    input_size: int
    hidden: int
    layers: int
    batch_first: bool

    def state_names(self) -> list[tuple[str, str, StateKind]]:
        """(graph input, graph output, StateSpec.kind) per state tensor, in wrapper order."""
        h: StateKind = "lstm_h" if self.kind == "lstm" else "gru_h"
        names = [(f"h0.{self.name}", f"hn.{self.name}", h)]
        if self.kind == "lstm":
            names.append((f"c0.{self.name}", f"cn.{self.name}", "lstm_c"))
        return names


@dataclass(frozen=True)
class OutputLayout:
    """What the probes found about the model's input and output axes."""

    features: int
    time_major_input: bool
    """True when the model's forward takes [time, batch, features]."""
    output_kind: OutputKind
    output_size: int
    output_time_major: bool
    """The raw output was [time, batch, n]; the wrapper transposes it."""
    add_feature_axis: bool
    """The raw output had no feature axis ([batch] / [batch, time]); the wrapper adds one."""


def find_recurrent(model: nn.Module) -> list[RecurrentSite]:
    """Every nn.LSTM / nn.GRU in `model`; refuse what cannot be streamed."""
    sites: list[RecurrentSite] = []
    for name, module in model.named_modules():
        kind = {nn.LSTM: "lstm", nn.GRU: "gru"}.get(type(module))
        if kind is None:
            if isinstance(module, (nn.RNNBase, nn.RNNCellBase)):
                raise UnsupportedModelError(
                    f"module {name or '<root>'!r} is a {type(module).__name__}: only nn.LSTM and nn.GRU are supported"
                )
            continue
        if not name:
            raise UnsupportedModelError("the model is a bare nn.LSTM/nn.GRU: wrap it in a module with a head")
        if module.bidirectional:
            raise UnsupportedModelError(
                f"{name}: bidirectional {type(module).__name__} reads the future "
                "and cannot be streamed one step at a time"
            )
        if getattr(module, "proj_size", 0) > 0:
            raise UnsupportedModelError(
                f"{name}: LSTM with proj_size={module.proj_size} (LSTMP) is not supported: "
                "ONNX Runtime cannot run it; use proj_size=0 and a Linear layer instead"
            )
        sites.append(
            RecurrentSite(name, kind, module.input_size, module.hidden_size, module.num_layers, module.batch_first)  # type: ignore[arg-type]
        )
    if not sites:
        raise UnsupportedModelError("the model contains no nn.LSTM or nn.GRU: nothing to stream")
    return sites


class StreamingWrapper(nn.Module):
    """forward(x, *states) -> (y, *next_states); see the module docstring for shapes."""

    def __init__(self, model: nn.Module, sites: list[RecurrentSite]) -> None:
        super().__init__()
        self.model = model
        self.sites = list(sites)
        self.layout: OutputLayout | None = None
        self._time_major_input = False
        self._feed: dict[str, Any] | None = None  # site name -> hx to inject; None: hooks inactive
        self._final: dict[str, Any] = {}
        self._calls: dict[str, int] = {}
        self._input_batch: dict[str, int] = {}
        for site in self.sites:
            module = model.get_submodule(site.name)
            module.register_forward_pre_hook(self._make_pre_hook(site), with_kwargs=True)
            module.register_forward_hook(self._make_post_hook(site))

    def _make_pre_hook(self, site: RecurrentSite) -> Any:
        def pre_hook(
            module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
        ) -> tuple[tuple[Any, ...], dict[str, Any]] | None:
            if self._feed is None:
                return None
            self._calls[site.name] = self._calls.get(site.name, 0) + 1
            inp = args[0] if args else kwargs["input"]
            # Record the batch size the RNN really sees, to verify the input layout.
            self._input_batch[site.name] = int(inp.shape[0 if module.batch_first else 1])
            return (inp, self._feed[site.name]), {}

        return pre_hook

    def _make_post_hook(self, site: RecurrentSite) -> Any:
        def post_hook(module: Any, args: tuple[Any, ...], output: Any) -> None:
            if self._feed is not None:
                self._final[site.name] = output[1]

        return post_hook

    def _feeds(self, states: tuple[torch.Tensor, ...]) -> dict[str, Any]:
        feed: dict[str, Any] = {}
        i = 0
        for site in self.sites:
            if site.kind == "lstm":
                feed[site.name] = (states[i], states[i + 1])
                i += 2
            else:
                feed[site.name] = states[i]
                i += 1
        return feed

    def raw_forward(self, x: torch.Tensor, *states: torch.Tensor) -> tuple[Any, list[torch.Tensor]]:
        """Run the user's module with injected state: (its raw output, next states flat)."""
        if self._time_major_input:
            x = x.transpose(0, 1)
        self._feed, self._final, self._calls, self._input_batch = self._feeds(states), {}, {}, {}
        try:
            out = self.model(x)
        finally:
            self._feed = None
        if isinstance(out, (tuple, list)):  # e.g. (y, hidden): the model's output is the first element
            out = out[0]
        twice = [n for n, c in self._calls.items() if c > 1]
        if twice:
            raise UnsupportedModelError(
                f"{twice[0]} is called {self._calls[twice[0]]} times in one forward; "
                "each nn.LSTM/nn.GRU must run once over the whole sequence to be streamed"
            )
        unused = [s.name for s in self.sites if s.name not in self._final]
        if unused:
            raise UnsupportedModelError(f"{unused[0]} is never called by forward(); remove it from the module")
        flat: list[torch.Tensor] = []
        for site in self.sites:
            final = self._final[site.name]
            flat.extend(final if site.kind == "lstm" else (final,))
        return out, flat

    def forward(self, x: torch.Tensor, *states: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out, flat = self.raw_forward(x, *states)
        layout = self.layout
        if layout is not None:
            if layout.add_feature_axis:
                out = out.unsqueeze(-1)
            if layout.output_time_major:
                out = out.transpose(0, 1)
        return (out, *flat)

    def plain_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The user's module as written (no state injected), in the wrapper's canonical layout:
        the reference that proves the wrapper itself changed nothing."""
        layout = self.layout
        assert layout is not None, "plain_forward needs a probed wrapper"
        out = self.model(x.transpose(0, 1) if self._time_major_input else x)
        if isinstance(out, (tuple, list)):
            out = out[0]
        if layout.add_feature_axis:
            out = out.unsqueeze(-1)
        canonical: torch.Tensor = out.transpose(0, 1) if layout.output_time_major else out
        return canonical

    def zero_states(self, batch: int) -> list[torch.Tensor]:
        return [torch.zeros(site.layers, batch, site.hidden) for site in self.sites for _ in site.state_names()]


def _probe(wrapper: StreamingWrapper, features: int, time_major: bool) -> list[tuple[int, ...]]:
    wrapper._time_major_input = time_major
    shapes = []
    for batch, time in _PROBES:
        with torch.no_grad():
            out, _ = wrapper.raw_forward(torch.zeros(batch, time, features), *wrapper.zero_states(batch))
        if not isinstance(out, torch.Tensor):
            raise UnsupportedModelError(f"forward() returned {type(out).__name__}, expected a tensor")
        wrong = [n for n, b in wrapper._input_batch.items() if b != batch]
        if wrong:
            raise ValueError(f"{wrong[0]} saw batch size {wrapper._input_batch[wrong[0]]}, expected {batch}")
        shapes.append(tuple(out.shape))
    return shapes


def _output_layout(shapes: list[tuple[int, ...]], features: int, time_major: bool) -> OutputLayout:
    (b1, t1), (b2, t2) = _PROBES
    s1, s2 = shapes

    def layout(kind: OutputKind, size: int, tmajor: bool, add: bool) -> OutputLayout:
        return OutputLayout(features, time_major, kind, size, tmajor, add)

    if len(s1) == 3 and s1[2] == s2[2]:
        if s1[:2] == (b1, t1) and s2[:2] == (b2, t2):
            return layout("sequence", s1[2], False, False)
        if s1[:2] == (t1, b1) and s2[:2] == (t2, b2):
            return layout("sequence", s1[2], True, False)
    if len(s1) == 2:
        if s1 == (b1, t1) and s2 == (b2, t2):
            return layout("sequence", 1, False, True)
        if s1 == (t1, b1) and s2 == (t2, b2):
            return layout("sequence", 1, True, True)
        if s1[0] == b1 and s2[0] == b2 and s1[1] == s2[1]:
            return layout("last", s1[1], False, False)
    if len(s1) == 1 and s1 == (b1,) and s2 == (b2,):
        return layout("last", 1, False, True)
    raise UnsupportedModelError(
        f"cannot tell the output layout: for (batch, time) {_PROBES[0]} and {_PROBES[1]} the model "
        f"returned shapes {s1} and {s2}; expected [batch, time, n], [time, batch, n] or [batch, n]"
    )


def make_streaming(model: nn.Module, sites: list[RecurrentSite], features: int) -> StreamingWrapper:
    """Wrap `model` (in eval mode) and find its input and output layouts by probing."""
    model.eval()
    wrapper = StreamingWrapper(model, sites).eval()
    # Try the layout the first RNN suggests first; the probe verifies it by the batch size each RNN sees.
    order = [not sites[0].batch_first, sites[0].batch_first]
    errors: list[str] = []
    for time_major in order:
        try:
            shapes = _probe(wrapper, features, time_major)
        except UnsupportedModelError:
            raise
        except Exception as exc:  # noqa: BLE001 - the user's forward can raise anything on a wrong layout
            errors.append(f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}")
            continue
        wrapper.layout = _output_layout(shapes, features, time_major)
        wrapper._time_major_input = time_major
        return wrapper
    raise UnsupportedModelError(
        f"the model does not accept x [batch, time, {features}] ({errors[0][:200]}); "
        "check --features (the model's input width)"
    )
