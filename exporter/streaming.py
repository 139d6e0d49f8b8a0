"""Make a user's module streamable: its recurrent state becomes explicit inputs and outputs.

The user's `forward(x)` takes no state. Every recurrent site (exporter.sites) gets its state
replaced by a tensor fed to the wrapper, and its final state collected: an nn.LSTM / nn.GRU
through forward hooks on its one call; a cell (nn.LSTMCell / nn.GRUCell) through the same
hooks, fed on the first call of the user's time loop and read after the last; a step module
through its `step` method, shadowed on the instance the same way.
`StreamingWrapper.forward(x, *states) -> (y, *next_states)` is what gets exported:

- x: [batch, time, features] always (transposed inside when the model is time-major);
- states: per site, LSTM/LSTMCell → h, c; GRU/GRUCell → h; step module → its declared
  states in order; each [layers, batch, width] (batch axis 1; layers 1 for step sites);
- y: [batch, time, n] (`output_kind == "sequence"`) or [batch, n] (`"last"`).

A model with a step site is traced with one time step (`one_step`): the user's Python loop
unrolls under tracing, so only a one-step graph is the same graph for every sequence length.
The layouts are found by probing with two (batch, time) pairs, never guessed from names.

This module defines an nn.Module, so it imports torch at import time: only the export path
(`exporter.cli.run`, lazily) imports it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from edge_config.errors import UnsupportedModelError
from edge_config.manifest import OutputKind
from exporter.sites import RecurrentSite

# Two probes with distinct batch and time sizes (and batch != time) tell every axis apart.
_PROBES = ((5, 11), (6, 13))


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


class StreamingWrapper(nn.Module):
    """forward(x, *states) -> (y, *next_states); see the module docstring for shapes."""

    def __init__(self, model: nn.Module, sites: list[RecurrentSite], *, fuse: bool = True) -> None:
        super().__init__()
        self.model = model
        self.sites = list(sites)
        self.fuse = fuse
        """Export step modules that declare onnx_lstm_weights() as ONNX LSTM nodes (exporter.fused_cell)."""
        self.layout: OutputLayout | None = None
        self._time_major_input = False
        self._feed: dict[str, Any] | None = None  # site name -> state to inject; None: hooks inactive
        self._final: dict[str, Any] = {}
        self._calls: dict[str, int] = {}
        self._input_batch: dict[str, int] = {}
        for site in self.sites:
            module = model.get_submodule(site.name)
            if site.kind == "step":
                # The protocol's step() is a plain method, which hooks do not see: shadow it on the instance.
                module.step = self._wrap_step(site, module)
                continue
            if site.kind == "conv":
                module.register_forward_pre_hook(self._make_conv_pre_hook(site))
                module.register_forward_hook(self._make_conv_post_hook(site))
                continue
            module.register_forward_pre_hook(self._make_pre_hook(site), with_kwargs=True)
            module.register_forward_hook(self._make_post_hook(site))

    def _seen(self, site: RecurrentSite, batch: int) -> bool:
        """Count a call; True when it is the first of this forward (the one whose state is fed)."""
        calls = self._calls[site.name] = self._calls.get(site.name, 0) + 1
        self._input_batch[site.name] = batch  # the batch size the site really sees verifies the input layout
        return calls == 1

    def _make_pre_hook(self, site: RecurrentSite) -> Any:
        def pre_hook(
            module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
        ) -> tuple[tuple[Any, ...], dict[str, Any]] | None:
            if self._feed is None:
                return None
            inp = args[0] if args else kwargs["input"]
            batch_axis = 0 if site.per_step or module.batch_first else 1
            if not self._seen(site, int(inp.shape[batch_axis])) and site.per_step:
                return None  # later steps of the user's loop carry the state the previous step returned
            return (inp, self._feed[site.name]), {}

        return pre_hook

    def _make_post_hook(self, site: RecurrentSite) -> Any:
        def post_hook(module: Any, args: tuple[Any, ...], output: Any) -> None:
            if self._feed is not None:
                self._final[site.name] = output if site.per_step else output[1]

        return post_hook

    def _make_conv_pre_hook(self, site: RecurrentSite) -> Any:
        """The fed frames take the place of the causal padding: the conv sees the real past."""
        frames = site.layers

        def pre_hook(module: Any, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
            if self._feed is None:
                return None
            inp = args[0]  # [batch, channels, time]; already left-padded by the user's code unless the conv pads itself
            self._seen(site, int(inp.shape[0]))
            past = self._feed[site.name].permute(1, 2, 0)  # [frames, batch, channels] → [batch, channels, frames]
            seen = torch.cat([past, inp if site.pads_itself else inp[..., frames:]], dim=2)
            self._final[site.name] = seen[..., seen.shape[2] - frames :]
            return (seen,)

        return pre_hook

    def _make_conv_post_hook(self, site: RecurrentSite) -> Any:
        frames = site.layers

        def post_hook(module: Any, args: tuple[Any, ...], output: Any) -> Any:
            if self._feed is None or not site.pads_itself:
                return None
            # Its own zero padding still pads the (now real) past on the left: those outputs go.
            return output[..., frames:]

        return post_hook

    def _wrap_step(self, site: RecurrentSite, module: nn.Module) -> Any:
        names = [key for key, _ in site.state]
        step: Any = module.step

        def fed_step(x_t: torch.Tensor, state: Any) -> Any:
            if self._feed is None:
                return step(x_t, state)
            if self._seen(site, int(x_t.shape[0])):
                state = self._feed[site.name]
            result = step(x_t, state)
            if not (isinstance(result, tuple) and len(result) == 2 and isinstance(result[1], dict)):
                raise UnsupportedModelError(f"{site.label}.step() must return (y_t, state dict)")
            if sorted(result[1]) != sorted(names):
                raise UnsupportedModelError(
                    f"{site.label}.step() returned state {sorted(result[1])}, but state_sizes declares {sorted(names)}"
                )
            if site.fused:
                result = self._fused(site, module, x_t, state, result)
            self._final[site.name] = result[1]
            return result

        return fed_step

    def _fused(self, site: RecurrentSite, module: nn.Module, x_t: torch.Tensor, state: Any, result: Any) -> Any:
        """While exporting, the step's new (h, c) become one ONNX LSTM node (exporter.fused_cell)."""
        from exporter.fused_cell import lstm_node

        y_t, new = result
        if not torch.onnx.is_in_onnx_export():
            if not torch.equal(y_t, new["h"]):
                raise UnsupportedModelError(
                    f"{site.label} declares onnx_lstm_weights(), so its step() must return the new h as its "
                    "output (put the head outside the cell)"
                )
            return result
        if not self.fuse:
            return result
        h, c = lstm_node(module, x_t, state["h"], state["c"], new["h"], new["c"])
        return h, {"h": h, "c": c}

    def _feeds(self, states: tuple[torch.Tensor, ...]) -> dict[str, Any]:
        """Graph state tensors (wrapper order) → what each site's first call gets instead of its own."""
        feed: dict[str, Any] = {}
        i = 0
        for site in self.sites:
            n = len(site.state_names())
            mine = list(states[i : i + n])
            i += n
            if site.per_step:
                mine = [s[0] for s in mine]  # [1, batch, size] → [batch, size]
            if site.kind == "step":
                feed[site.name] = {key: s for (key, _), s in zip(site.state, mine, strict=True)}
            elif site.kind == "conv":
                feed[site.name] = mine[0]
            else:
                feed[site.name] = tuple(mine) if n == 2 else mine[0]
        return feed

    def _flat_final(self, site: RecurrentSite) -> list[torch.Tensor]:
        final = self._final[site.name]
        if site.kind == "step":
            values = [final[key] for key, _ in site.state]
        elif site.kind == "conv":
            values = [final.permute(2, 0, 1)]  # [batch, channels, frames] → [frames, batch, channels]
        else:
            values = list(final) if isinstance(final, (tuple, list)) else [final]
        return [v.unsqueeze(0) for v in values] if site.per_step else values

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
        twice = [s.name for s in self.sites if not s.per_step and self._calls.get(s.name, 0) > 1]
        if twice:
            raise UnsupportedModelError(
                f"{twice[0]} is called {self._calls[twice[0]]} times in one forward; "
                "each nn.LSTM/nn.GRU must run once over the whole sequence to be streamed"
            )
        unused = [s.label for s in self.sites if s.name not in self._final]
        if unused:
            raise UnsupportedModelError(f"{unused[0]} is never called by forward(); remove it from the module")
        flat: list[torch.Tensor] = []
        for site in self.sites:
            flat.extend(self._flat_final(site))
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

    @property
    def one_step(self) -> bool:
        """True when a site runs once per time step: the traced graph then holds exactly one step."""
        return any(site.per_step for site in self.sites)

    def zero_states(self, batch: int) -> list[torch.Tensor]:
        return [torch.zeros(layers, batch, width) for site in self.sites for layers, width in site.state_shapes()]


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
        loops = [s for s in wrapper.sites if s.per_step and wrapper._calls.get(s.name) != time]
        if loops:
            raise UnsupportedModelError(
                f"{loops[0].label} is called {wrapper._calls.get(loops[0].name, 0)} times for {time} time steps; "
                "a cell must be called once per time step to be streamed"
            )
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


def make_streaming(
    model: nn.Module, sites: list[RecurrentSite], features: int, *, fuse: bool = True
) -> StreamingWrapper:
    """Wrap `model` (in eval mode) and find its input and output layouts by probing.

    fuse: step modules that declare onnx_lstm_weights() export as ONNX LSTM nodes."""
    model.eval()
    wrapper = StreamingWrapper(model, sites, fuse=fuse).eval()
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
