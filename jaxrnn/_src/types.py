"""Shape legend, parameter and state containers shared by the whole library.

Letters used in every docstring (SPEC.md):

- ``B`` batch, ``T`` time steps, ``F`` input features, ``H`` hidden size,
- ``P`` projection size (LSTM ``proj_size``); ``H_out = P if P else H``,
- ``L`` layers, ``D`` directions (1 or 2), ``G`` gates (RNN 1, GRU 3, LSTM 4).

``[*batch]`` stands for any number of batch axes.
"""

from __future__ import annotations

from typing import NamedTuple

import jax

Array = jax.Array


class CellParams(NamedTuple):
  """Parameters of one layer in one direction, fused and in JAX layout.

  Importing PyTorch weights is a transpose: ``w_ih = weight_ih_l{k}.T`` and so on.

  Attributes:
    w_ih: ``[F, G*H]`` input-to-hidden weights, gates side by side in PyTorch's
      order (LSTM ``i, f, g, o``; GRU ``r, z, n``).
    w_hh: ``[H_out, G*H]`` hidden-to-hidden weights.
    b_ih: ``[G*H]`` input bias, or ``None`` when ``use_bias=False``.
    b_hh: ``[G*H]`` hidden bias, or ``None`` when ``use_bias=False``.
    w_hr: ``[H, P]`` LSTM projection, or ``None`` without projection.
  """

  w_ih: Array
  w_hh: Array
  b_ih: Array | None = None
  b_hh: Array | None = None
  w_hr: Array | None = None


class LSTMState(NamedTuple):
  """State of an LSTM; unpacks like PyTorch's ``(h_n, c_n)``.

  For a layer's ``final_carry`` the shapes are ``h: [L*D, *batch, H_out]`` and
  ``c: [L*D, *batch, H]``, row ``layer*D + direction``. Inside one cell step they
  are ``h: [..., H_out]`` and ``c: [..., H]``.
  """

  h: Array
  c: Array


# An RNN or GRU carry is its hidden state array; an LSTM carry is an LSTMState.
Carry = Array | LSTMState


# Lets `jax.export` serialize functions that take or return an LSTMState (e.g. a decoding step).
jax.export.register_namedtuple_serialization(LSTMState, serialized_name='jaxrnn.LSTMState')
