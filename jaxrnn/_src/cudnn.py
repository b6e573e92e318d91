"""cuDNN's LSTM, through ``jax.experimental.rnn``, for the stacks it computes exactly.

cuDNN runs a whole LSTM stack (layers, both directions, ragged lengths) as one
library call with its own fused kernels and backward pass. Its equations and
gate order (``i, f, g, o``, two biases) are PyTorch's, so jaxrnn's parameters
map over by a transpose and a concatenation into cuDNN's flat weight vector
(layout documented in ``jax.experimental.rnn``); the gradient flows back through
that concatenation to the usual parameter tree.

jaxrnn's padding semantics are kept whatever cuDNN writes at padding: the
outputs are masked with ``seq_lengths`` afterwards and sequences of length 0,
which cuDNN does not take, run with length 1 and then get the initial carry
back and zero outputs.

Used when :func:`cudnn_unsupported` returns None: an LSTM without projection,
float32 compute, no dropout between layers in this call, no ``remat`` or
``checkpoint_every`` (which ask for the scan's memory behaviour), on a CUDA
backend whose jaxlib has the cuDNN RNN kernels. Matmul precision follows
JAX's: TF32 by default, full float32 under
``jax.default_matmul_precision('highest')``.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

from jaxrnn._src.types import Array
from jaxrnn._src.types import CellParams
from jaxrnn._src.types import LSTMState


def cudnn_available(backend: str | None = None) -> bool:
  """Whether this process can run cuDNN's RNN kernels (a CUDA backend with jaxlib's cuDNN RNN)."""
  if (backend or jax.default_backend()) != 'gpu':
    return False
  try:
    from jax.experimental import rnn
  except ImportError:  # pragma: no cover - jax without the module
    return False
  return getattr(rnn, 'gpu_rnn', None) is not None and any(d.platform == 'gpu' for d in jax.devices())


def cudnn_unsupported(config, dtype, *, dropout: bool) -> str | None:
  """Returns why cuDNN cannot run this stack exactly, or None when it can.

  Args:
    config: the layer's ``LayerConfig``.
    dtype: the compute dtype.
    dropout: whether dropout between layers is active in this call.
  """
  if config.cell != 'lstm':
    return f'cuDNN runs LSTM only here, got {config.cell}'
  if config.proj_size:
    return 'jax.experimental.rnn has no LSTM projection (proj_size)'
  if jnp.dtype(dtype) != jnp.float32:
    return f'jax.experimental.rnn computes in float32 only, got dtype {jnp.dtype(dtype)}'
  if dropout:
    return "cuDNN's dropout between layers draws other masks than jaxrnn's"
  if config.remat or config.checkpoint_every:
    return '`remat` and `checkpoint_every` ask for the scan loop and its memory use'
  return None


def pack_weights(params: Sequence[CellParams]) -> Array:
  """Returns cuDNN's flat weight vector for ``L*D`` rows of LSTM parameters.

  cuDNN's layout: for each pseudo-layer (row ``layer*D + direction``) ``W_ih``
  ``[4H, F]`` then ``W_hh`` ``[4H, H]``, flattened row-major; then for each
  pseudo-layer ``b_ih`` then ``b_hh``. jaxrnn stores the transposes.
  """
  weights, biases = [], []
  for p in params:
    gates = p.w_hh.shape[-1]
    weights += [p.w_ih.T.reshape(-1), p.w_hh.T.reshape(-1)]
    for b in (p.b_ih, p.b_hh):
      biases.append(jnp.zeros((gates,), p.w_ih.dtype) if b is None else b)
  return jnp.concatenate(weights + biases)


def cudnn_stack(
  config,
  params: Sequence[CellParams],
  xs: Array,
  seq_lengths: Array | None,
  carry: LSTMState,
) -> tuple[Array, LSTMState]:
  """:func:`jaxrnn._src.compose.run_stack` of an LSTM stack as one cuDNN call.

  Args:
    config: the layer's ``LayerConfig`` (``cudnn_unsupported`` returned None).
    params: ``L*D`` cell parameters, index ``layer*D + direction``.
    xs: ``[T, B, F]`` time-major inputs, zero at padding.
    seq_lengths: ``[B]`` integers in ``[0, T]`` or ``None``.
    carry: ``LSTMState`` with leaves ``[L*D, B, H]``.

  Returns:
    ``ys: [T, B, D*H]`` with zeros at padding, and the final ``LSTMState``.
  """
  from jax.experimental import rnn

  num_steps, batch, features = xs.shape
  lengths = jnp.full((batch,), num_steps, jnp.int32) if seq_lengths is None else seq_lengths.astype(jnp.int32)
  if num_steps == 0:
    return jnp.zeros((0, batch, config.num_directions * config.hidden_size), xs.dtype), carry
  h0, c0 = carry.h.astype(xs.dtype), carry.c.astype(xs.dtype)
  ys, h_n, c_n = rnn.lstm(
    jnp.swapaxes(xs, 0, 1),
    h0,
    c0,
    pack_weights(params),
    jnp.maximum(lengths, 1),  # cuDNN takes lengths >= 1; length 0 is restored below
    input_size=features,
    hidden_size=config.hidden_size,
    num_layers=config.num_layers,
    dropout=0.0,
    bidirectional=config.bidirectional,
  )
  valid = jnp.arange(num_steps)[:, None] < lengths[None, :]
  ys = jnp.where(valid[..., None], jnp.swapaxes(ys, 0, 1), 0)
  empty = (lengths == 0)[None, :, None]
  final = LSTMState(jnp.where(empty, h0, h_n), jnp.where(empty, c0, c_n).astype(carry.c.dtype))
  return ys, final
