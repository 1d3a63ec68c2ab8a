"""Recurrent cells and layers written from their equations, laid out like ``torch.nn``.

- Elman, "Finding Structure in Time", Cognitive Science 14, 1990 (the simple RNN):

      h_t = tanh(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)

- Hochreiter & Schmidhuber, "Long Short-Term Memory", Neural Computation 9, 1997, with the
  forget gate of Gers et al. (2000), as every modern LSTM has it:

      i_t = sigma(W_ii x_t + b_ii + W_hi h_{t-1} + b_hi)      input gate
      f_t = sigma(W_if x_t + b_if + W_hf h_{t-1} + b_hf)      forget gate
      g_t = tanh (W_ig x_t + b_ig + W_hg h_{t-1} + b_hg)      candidate cell
      o_t = sigma(W_io x_t + b_io + W_ho h_{t-1} + b_ho)      output gate
      c_t = f_t * c_{t-1} + i_t * g_t
      h_t = o_t * tanh(c_t)

- Cho et al., "Learning Phrase Representations using RNN Encoder-Decoder for Statistical
  Machine Translation", EMNLP 2014, arXiv:1406.1078 (the GRU). Two forms are here:

  ``gru`` (the cuDNN/PyTorch form, equal to ``nn.GRU``)::

      r_t = sigma(W_ir x_t + b_ir + W_hr h_{t-1} + b_hr)
      z_t = sigma(W_iz x_t + b_iz + W_hz h_{t-1} + b_hz)
      n_t = tanh (W_in x_t + b_in + r_t * (W_hn h_{t-1} + b_hn))
      h_t = (1 - z_t) * n_t + z_t * h_{t-1}

  ``gru_textbook`` (the form of the lecture and of most textbooks)::

      h~_t = tanh(W [r_t * h_{t-1}, x_t]) = tanh(W_in x_t + b_in + W_hn (r_t * h_{t-1}) + b_hn)
      h_t  = (1 - z_t) * h_{t-1} + z_t * h~_t

  They are *different functions* of the same weights, for two reasons:

  1. Where the reset gate acts. The textbook form resets the state *before* the
     recurrent product, ``W_hn (r * h)``; cuDNN resets it *after*, ``r * (W_hn h + b_hn)``
     (which lets one matrix product ``W_hh h`` serve all three gates at once, the reason
     cuDNN chose it). ``W (r * h)`` mixes the gated units together, ``r * (W h)`` gates
     each output unit, and ``b_hn`` is gated in one form and not in the other; no
     re-labelling of weights turns one into the other.
  2. The role of ``z``. In the textbook form ``z`` is the share of the *new* candidate,
     in PyTorch's (and in Cho et al.'s own eq. 8, ``h = z h_{t-1} + (1 - z) h~``) it is
     the share of the *old* state. This difference alone is a re-parametrisation
     (``1 - sigma(a) = sigma(-a)``: negate ``W_z`` and ``b_z``), but on the same weights
     the outputs differ. The tests check both that ``gru_textbook`` follows its
     equations and that it is not ``nn.GRU``.

The layers (:class:`RNN`, :class:`LSTM`, :class:`GRU`) are stacks of these cells, with
multi-layer, bidirectional, inter-layer dropout, ``batch_first`` and padded batches
(given as a ``PackedSequence`` or as ``lengths``). Their parameters have the names and
shapes of PyTorch's (``weight_ih_l{k}``, ``weight_hh_l{k}``, ``bias_ih_l{k}``,
``bias_hh_l{k}``, ``..._reverse``; gates stacked in the order ``i,f,g,o`` for the LSTM
and ``r,z,n`` for the GRU), so each loads the other's ``state_dict`` with
``strict=True`` and computes the same function. These are reference implementations:
a Python loop over time. Models train with the fused ``nn.LSTM``/``nn.GRU`` (cuDNN on a
GPU) by default; :func:`make_rnn` picks either (``impl="fused"|"reference"``).

Training notes: exploding gradients are handled by clipping the global gradient norm,
``g <- g * max_norm / ||g||`` (Pascanu et al., 2013), which is the trainer option
``trainer.gradient_clip_val=<max_norm>``. Truncated back-propagation through time for
long sequences is :func:`truncated_bptt`.

Deviations: none in the equations. Padded steps leave the state unchanged and output
zeros, as ``nn.LSTM`` does with ``pack_padded_sequence``; the reverse direction of a
padded sequence starts at its last real step.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from zoo.errors import ConfigError

State = Any  # a tensor (RNN, GRU) or a pair of tensors (LSTM)

# ---------------------------------------------------------------- cell equations
# Each step takes ``gi = W_ih x_t + b_ih`` (computed for all steps at once by the layers),
# the previous state and the recurrent weights, and returns the new state.


def elman_step(gi: torch.Tensor, h: torch.Tensor, w_hh: torch.Tensor, b_hh: torch.Tensor | None,
               nonlinearity: str = "tanh") -> torch.Tensor:  # fmt: skip
    """Elman: ``h_t = act(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)``."""
    a = gi + F.linear(h, w_hh, b_hh)
    return torch.tanh(a) if nonlinearity == "tanh" else torch.relu(a)


def lstm_step(gi: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor], w_hh: torch.Tensor,
              b_hh: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """LSTM: gates ``i, f, g, o``; ``c_t = f c_{t-1} + i g``, ``h_t = o tanh(c_t)``."""
    h, c = state
    i, f, g, o = (gi + F.linear(h, w_hh, b_hh)).chunk(4, dim=-1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


def gru_step(gi: torch.Tensor, h: torch.Tensor, w_hh: torch.Tensor, b_hh: torch.Tensor | None) -> torch.Tensor:
    """GRU, cuDNN form: ``n = tanh(W_in x + b_in + r * (W_hn h + b_hn))``, ``h' = (1-z) n + z h``."""
    i_r, i_z, i_n = gi.chunk(3, dim=-1)
    h_r, h_z, h_n = F.linear(h, w_hh, b_hh).chunk(3, dim=-1)
    r, z = torch.sigmoid(i_r + h_r), torch.sigmoid(i_z + h_z)
    n = torch.tanh(i_n + r * h_n)
    return (1 - z) * n + z * h


def gru_textbook_step(gi: torch.Tensor, h: torch.Tensor, w_hh: torch.Tensor, b_hh: torch.Tensor | None) -> torch.Tensor:
    """GRU, textbook form: ``h~ = tanh(W_in x + b_in + W_hn (r * h) + b_hn)``, ``h' = (1-z) h + z h~``."""
    hidden = h.shape[-1]
    i_r, i_z, i_n = gi.chunk(3, dim=-1)
    b_r = b_z = b_n = None
    if b_hh is not None:
        b_r, b_z, b_n = b_hh.chunk(3)
    w_r, w_z, w_n = w_hh.split(hidden)
    r = torch.sigmoid(i_r + F.linear(h, w_r, b_r))
    z = torch.sigmoid(i_z + F.linear(h, w_z, b_z))
    candidate = torch.tanh(i_n + F.linear(r * h, w_n, b_n))  # reset BEFORE the recurrent product
    return (1 - z) * h + z * candidate


MODES: dict[str, tuple[int, Callable[..., State]]] = {  # mode -> (gates, step)
    "rnn_tanh": (1, elman_step),
    "rnn_relu": (1, lambda gi, h, w, b: elman_step(gi, h, w, b, "relu")),
    "lstm": (4, lstm_step),
    "gru": (3, gru_step),
    "gru_textbook": (3, gru_textbook_step),
}

# ---------------------------------------------------------------- cells


class RecurrentCell(nn.Module):
    """One step of a recurrent network; parameters named like ``nn.LSTMCell``'s."""

    mode: str

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True):
        super().__init__()
        gates = MODES[self.mode][0]
        self.input_size, self.hidden_size = input_size, hidden_size
        self.weight_ih = nn.Parameter(torch.empty(gates * hidden_size, input_size))
        self.weight_hh = nn.Parameter(torch.empty(gates * hidden_size, hidden_size))
        self.bias_ih = nn.Parameter(torch.empty(gates * hidden_size)) if bias else None
        self.bias_hh = nn.Parameter(torch.empty(gates * hidden_size)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.hidden_size)  # PyTorch's initialisation
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def forward(self, x: torch.Tensor, state: State = None) -> State:
        """``x`` (B, input_size); ``state`` (B, H), or ``(h, c)`` for the LSTM; zeros if ``None``."""
        if state is None:
            zeros = x.new_zeros(x.shape[0], self.hidden_size)
            state = (zeros, zeros) if self.mode == "lstm" else zeros
        gi = F.linear(x, self.weight_ih, self.bias_ih)
        return MODES[self.mode][1](gi, state, self.weight_hh, self.bias_hh)


class RNNCell(RecurrentCell):
    mode = "rnn_tanh"


class LSTMCell(RecurrentCell):
    mode = "lstm"


class GRUCell(RecurrentCell):
    mode = "gru"


class TextbookGRUCell(RecurrentCell):
    mode = "gru_textbook"


# ---------------------------------------------------------------- layers


def _reverse_index(lengths: torch.Tensor, steps: int) -> torch.Tensor:
    """(T, B) time index reversing each sequence within its length; padding stays put."""
    t = torch.arange(steps, device=lengths.device).unsqueeze(1)  # (T, 1)
    return torch.where(t < lengths, lengths - 1 - t, t)


class RecurrentLayer(nn.Module):
    """A stack of recurrent cells with ``torch.nn.RNN``'s interface and parameter layout.

    ``forward(input, hx=None, lengths=None)``: ``input`` is (T, B, I), (B, T, I) with
    ``batch_first``, or a ``PackedSequence``; ``lengths`` (B,) marks padded batches
    without packing. Returns ``(output, h_n)`` (``(output, (h_n, c_n))`` for the LSTM)
    with ``output`` (T, B, D*H) and ``h_n`` (num_layers*D, B, H) as PyTorch's layers do.
    """

    mode: str

    def __init__(
        self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
        batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
    ):  # fmt: skip
        super().__init__()
        gates = MODES[self.mode][0]
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bias, self.batch_first, self.dropout, self.bidirectional = bias, batch_first, dropout, bidirectional
        self.num_directions = 2 if bidirectional else 1
        for layer in range(num_layers):
            layer_input = input_size if layer == 0 else hidden_size * self.num_directions
            for suffix in self._suffixes():
                names = self._names(layer, suffix)
                setattr(self, names[0], nn.Parameter(torch.empty(gates * hidden_size, layer_input)))
                setattr(self, names[1], nn.Parameter(torch.empty(gates * hidden_size, hidden_size)))
                if bias:
                    setattr(self, names[2], nn.Parameter(torch.empty(gates * hidden_size)))
                    setattr(self, names[3], nn.Parameter(torch.empty(gates * hidden_size)))
        self.reset_parameters()

    def _suffixes(self) -> list[str]:
        return ["", "_reverse"][: self.num_directions]

    @staticmethod
    def _names(layer: int, suffix: str) -> tuple[str, str, str, str]:
        return tuple(f"{kind}_l{layer}{suffix}" for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def _weights(self, layer: int, suffix: str) -> list[torch.Tensor | None]:
        return [getattr(self, n, None) for n in self._names(layer, suffix)]

    def _run_direction(self, x: torch.Tensor, state: State, mask: torch.Tensor, layer: int, suffix: str):
        """One direction of one layer over time-major ``x`` (T, B, I); ``mask`` (T, B, 1)."""
        w_ih, w_hh, b_ih, b_hh = self._weights(layer, suffix)
        step = MODES[self.mode][1]
        gi = F.linear(x, w_ih, b_ih)  # (T, B, G*H): the input projection for all steps at once
        outputs = []
        for t in range(x.shape[0]):
            new = step(gi[t], state, w_hh, b_hh)
            m = mask[t]
            # Past a sequence's end the state is kept and the output is zero (packed semantics).
            if isinstance(new, tuple):
                state = tuple(torch.where(m, n, s) for n, s in zip(new, state))
                outputs.append(new[0] * m)
            else:
                state = torch.where(m, new, state)
                outputs.append(new * m)
        return torch.stack(outputs), state

    def forward(self, input: torch.Tensor | PackedSequence, hx: State = None, lengths: torch.Tensor | None = None):
        packed = isinstance(input, PackedSequence)
        if packed:
            x, lengths = pad_packed_sequence(input)  # (T, B, I), original batch order
        else:
            x = input.transpose(0, 1) if self.batch_first else input
        steps, batch = x.shape[:2]
        if lengths is None:
            lengths = torch.full((batch,), steps, dtype=torch.long, device=x.device)
        lengths = lengths.to(x.device)
        mask = (torch.arange(steps, device=x.device).unsqueeze(1) < lengths).unsqueeze(-1)  # (T, B, 1)
        rev = _reverse_index(lengths, steps).unsqueeze(-1) if self.bidirectional else None

        n_states = self.num_layers * self.num_directions
        if hx is None:
            zeros = x.new_zeros(n_states, batch, self.hidden_size)
            hx = (zeros, zeros) if self.mode == "lstm" else zeros
        h_n, c_n = [], []
        for layer in range(self.num_layers):
            outs = []
            for d, suffix in enumerate(self._suffixes()):
                k = layer * self.num_directions + d
                state = (hx[0][k], hx[1][k]) if self.mode == "lstm" else hx[k]
                inp = x if d == 0 else x.gather(0, rev.expand_as(x))
                out, state = self._run_direction(inp, state, mask, layer, suffix)
                if d == 1:
                    out = out.gather(0, rev.expand_as(out))  # the reversal is its own inverse
                outs.append(out)
                if self.mode == "lstm":
                    h_n.append(state[0]), c_n.append(state[1])
                else:
                    h_n.append(state)
            x = torch.cat(outs, dim=-1)  # (T, B, D*H)
            if self.dropout and self.training and layer < self.num_layers - 1:
                x = F.dropout(x, self.dropout, training=True)
        final = (torch.stack(h_n), torch.stack(c_n)) if self.mode == "lstm" else torch.stack(h_n)
        if packed:
            return pack_padded_sequence(x, lengths.cpu(), enforce_sorted=False), final
        return (x.transpose(0, 1) if self.batch_first else x), final

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}"
        if self.batch_first:
            s += ", batch_first=True"
        if self.dropout:
            s += f", dropout={self.dropout}"
        if self.bidirectional:
            s += ", bidirectional=True"
        return s


class RNN(RecurrentLayer):
    """Elman RNN layers (``nonlinearity="tanh"`` or ``"relu"``), like ``nn.RNN``."""

    def __init__(self, *args: Any, nonlinearity: str = "tanh", **kwargs: Any):
        if nonlinearity not in ("tanh", "relu"):
            raise ConfigError(f"RNN nonlinearity must be tanh or relu, got {nonlinearity!r}")
        self.mode = f"rnn_{nonlinearity}"
        self.nonlinearity = nonlinearity
        super().__init__(*args, **kwargs)


class LSTM(RecurrentLayer):
    """LSTM layers, like ``nn.LSTM`` (no projection, ``proj_size=0``)."""

    mode = "lstm"


class GRU(RecurrentLayer):
    """GRU layers in the cuDNN/PyTorch form, like ``nn.GRU``."""

    mode = "gru"


class TextbookGRU(RecurrentLayer):
    """GRU layers in the textbook form (reset before the recurrent product); no fused twin."""

    mode = "gru_textbook"


REFERENCE = {"rnn": RNN, "lstm": LSTM, "gru": GRU, "gru_textbook": TextbookGRU}
FUSED = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


def make_rnn(cell: str, impl: str = "fused", **kwargs: Any) -> nn.Module:
    """A recurrent layer: ``cell`` in rnn|lstm|gru|gru_textbook, ``impl`` fused (``torch.nn``,
    cuDNN on a GPU) or reference (this file). Both have the same parameters."""
    if impl not in ("fused", "reference"):
        raise ConfigError(f"impl must be fused or reference, got {impl!r}")
    table = FUSED if impl == "fused" else REFERENCE
    if cell not in REFERENCE:
        raise ConfigError(f"unknown recurrent cell {cell!r}; choose one of {', '.join(REFERENCE)}")
    if cell not in table:
        raise ConfigError(f"cell {cell!r} has no fused implementation; use impl=reference")
    return table[cell](**kwargs)


def detach_state(state: Any) -> Any:
    """The recurrent state cut from the graph that produced it."""
    from torch.utils._pytree import tree_map

    return tree_map(lambda t: t.detach() if isinstance(t, torch.Tensor) else t, state)


def truncated_bptt(rnn: nn.Module, x: torch.Tensor, steps: int, hx: State = None) -> Iterator[tuple[torch.Tensor, State]]:
    """Truncated back-propagation through time (Williams & Peng, 1990) over a long sequence.

    Yields ``(output, state)`` for consecutive chunks of ``steps`` time steps of ``x``
    (batch first). The state entering each chunk is detached, so the gradient of a chunk's
    loss stops at the chunk's start: call ``backward`` and the optimizer once per chunk.
    The forward values are those of one pass over the whole sequence.
    """
    if steps < 1:
        raise ConfigError(f"truncated BPTT needs steps >= 1, got {steps}")
    if not getattr(rnn, "batch_first", False):
        raise ConfigError("truncated_bptt expects a batch_first recurrent layer")
    state = hx
    for start in range(0, x.shape[1], steps):
        out, state = rnn(x[:, start : start + steps], None if state is None else detach_state(state))
        yield out, state
