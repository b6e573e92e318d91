"""Stacking, bidirectional composition and dropout between layers: pure functions.

The Flax layers (linen and NNX) only declare parameters and call
``apply_layers``; everything about layouts, carries and padding is here.
"""

from __future__ import annotations

import dataclasses
import math
import operator
from collections.abc import Sequence

import jax
import jax.numpy as jnp

from jaxrnn._src import checks
from jaxrnn._src.cells import accumulation_dtype
from jaxrnn._src.config import LayerConfig
from jaxrnn._src.scan import default_hoist_input_projection
from jaxrnn._src.scan import default_unroll
from jaxrnn._src.scan import fused_scan_layer
from jaxrnn._src.scan import refuse_forward_mode
from jaxrnn._src.scan import scan_layer
from jaxrnn._src.types import Array
from jaxrnn._src.types import Carry
from jaxrnn._src.types import CellParams
from jaxrnn._src.types import LSTMState


def zeros_carry(config: LayerConfig, batch_shape: Sequence[int], dtype=jnp.float32) -> Carry:
  """Returns the all-zeros carry ``[L*D, *batch, H_out]`` (``LSTMState`` for LSTM)."""
  rows = config.num_layers * config.num_directions
  h = jnp.zeros((rows, *batch_shape, config.output_size), dtype)
  if config.kind.has_cell_state:
    return LSTMState(h, jnp.zeros((rows, *batch_shape, config.hidden_size), dtype))
  return h


def compute_dtype(inputs: Array, params: Sequence[CellParams], dtype=None) -> jnp.dtype:
  """Returns ``dtype``, or when None the promotion of the inputs' and parameters' dtypes."""
  return jnp.dtype(jnp.result_type(inputs.dtype, params[0].w_ih.dtype) if dtype is None else dtype)


def dropout(rng: Array, rate: float, x: Array) -> Array:
  """Returns ``x`` with entries zeroed with probability ``rate``, the rest scaled by ``1/(1-rate)``."""
  keep = jax.random.bernoulli(rng, 1.0 - rate, x.shape)
  return jnp.where(keep, x / (1.0 - rate), jnp.zeros_like(x))


def run_stack(
  config: LayerConfig,
  params: Sequence[CellParams],
  xs: Array,
  seq_lengths: Array | None,
  carry: Carry,
  *,
  dropout_rng: Array | None = None,
) -> tuple[Array, Carry]:
  """Returns ``(ys, final_carry)`` of the whole stack on time-major inputs.

  Args:
    config: the layer's hyper-parameters.
    params: ``L*D`` cell parameters, index ``layer*D + direction``.
    xs: ``[T, B, F]``.
    seq_lengths: ``[B]`` integers in ``[0, T]`` or ``None``.
    carry: leaves ``[L*D, B, ...]``, in the carry-row order of ``params``.
    dropout_rng: a key to drop outputs of every layer but the last; ``None``
      for no dropout.

  Returns:
    ys: ``[T, B, D*H_out]``, the last layer's outputs, forward half first.
    final_carry: leaves ``[L*D, B, ...]``, row ``layer*D + direction``.
  """
  kind = config.kind
  directions = config.num_directions
  hoist = config.hoist_input_projection
  if hoist is None:
    hoist = default_hoist_input_projection()
  if kind.has_cell_state:  # the cell state accumulates in (at least) float32
    carry = LSTMState(carry.h, carry.c.astype(accumulation_dtype(carry.c.dtype)))

  finals = []
  for layer in range(config.num_layers):
    outputs = []
    for direction in range(directions):
      row = layer * directions + direction
      options = dict(
        reverse=direction == 1,
        hoist_input_projection=hoist,
        unroll=default_unroll() if config.unroll is None else config.unroll,
        checkpoint_every=config.checkpoint_every,
      )
      carry_row = jax.tree.map(operator.itemgetter(row), carry)
      if config.use_fused_backward:
        final, ys = fused_scan_layer(kind, params[row], carry_row, xs, seq_lengths, **options)
      else:
        final, ys = scan_layer(
          kind.recurrence, params[row], carry_row, xs, seq_lengths, remat=config.remat, **options
        )
      finals.append(final)
      outputs.append(ys)
    xs = outputs[0] if directions == 1 else jnp.concatenate(outputs, axis=-1)
    if dropout_rng is not None and layer < config.num_layers - 1:
      xs = dropout(jax.random.fold_in(dropout_rng, layer), config.dropout, xs)

  final_carry = jax.tree.map(lambda *leaves: jnp.stack(leaves), *finals)
  return xs, jax.tree.map(lambda leaf: leaf.astype(xs.dtype), final_carry)


def apply_layers(
  config: LayerConfig,
  params: Sequence[CellParams],
  inputs: Array,
  seq_lengths: Array | None = None,
  initial_carry: Carry | None = None,
  *,
  dtype=None,
  dropout_rng: Array | None = None,
  deterministic: bool = True,
) -> tuple[Array, Carry]:
  """Returns ``(outputs, final_carry)`` of a recurrent layer (SPEC §2).

  Args:
    config: the layer's hyper-parameters.
    params: ``L*D`` cell parameters, index ``layer*D + direction``.
    inputs: ``[*batch, T, F]``, or ``[T, *batch, F]`` when ``config.time_major``.
    seq_lengths: integers ``[*batch]`` in ``[0, T]``; ``None`` for all ``T``.
    initial_carry: like ``final_carry``; ``None`` for zeros.
    dtype: compute dtype; ``None`` promotes the inputs' and parameters' dtypes.
    dropout_rng: key for dropout between layers (needed when
      ``deterministic=False`` and ``config.dropout > 0``).
    deterministic: disables dropout.

  Returns:
    outputs: ``[*batch, T, D*H_out]`` (time-major ``[T, *batch, D*H_out]``),
      zeros at ``t >= seq_lengths``.
    final_carry: ``[L*D, *batch, H_out]`` (``LSTMState`` with
      ``c: [L*D, *batch, H]`` for LSTM).
  """
  inputs, batch_shape, num_steps, in_features = checks.check_inputs(inputs, config.time_major)
  checks.check_features(
    in_features, params[0].w_ih.shape[0], f'w_ih of {config.param_names[0]} is {list(params[0].w_ih.shape)}'
  )
  dtype = compute_dtype(inputs, params, dtype)
  seq_lengths = checks.check_seq_lengths(seq_lengths, batch_shape, num_steps, inputs.shape, config.time_major)
  if initial_carry is None:
    carry = zeros_carry(config, batch_shape, dtype)
  else:
    carry = checks.check_initial_carry(initial_carry, config, batch_shape, dtype)

  use_dropout = not deterministic and config.dropout > 0 and config.num_layers > 1
  if use_dropout and dropout_rng is None:
    raise ValueError(f'`dropout={config.dropout}` with deterministic=False needs `dropout_rng`.')

  if config.use_fused_backward:  # here, outside the jit below, forward mode is still visible
    refuse_forward_mode(params, inputs, carry, initial_carry)
  args = (config, dtype, list(params), inputs, seq_lengths, carry, dropout_rng if use_dropout else None)
  if any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(args[2:])):
    return _run_checked(*args)  # traced (jit, grad, vmap): part of the caller's program
  return _run_checked_eagerly(*args)


def _run_checked(config, dtype, params, inputs, seq_lengths, carry, dropout_rng):
  """The part of ``apply_layers`` after its checks."""
  if config.time_major:
    num_steps, batch_shape = inputs.shape[0], inputs.shape[1:-1]
  else:
    num_steps, batch_shape = inputs.shape[-2], inputs.shape[:-2]
  in_features = inputs.shape[-1]
  batch_size = math.prod(batch_shape)
  xs = inputs.astype(dtype)
  if config.time_major:
    xs = xs.reshape(num_steps, batch_size, in_features)
  else:
    xs = jnp.swapaxes(xs.reshape(batch_size, num_steps, in_features), 0, 1)
  params = [jax.tree.map(lambda w: jnp.asarray(w, dtype), p) for p in params]
  carry = jax.tree.map(lambda leaf: leaf.reshape(leaf.shape[0], batch_size, leaf.shape[-1]), carry)
  if seq_lengths is not None:
    seq_lengths = seq_lengths.reshape(batch_size)
    # Padding is never read: zero it once, so that NaN or inf there cannot reach the
    # gradients through the masked-out branch (0 * inf). Later layers read outputs,
    # which are already zero at padding.
    valid = jnp.arange(num_steps)[:, None] < seq_lengths[None, :]
    xs = jnp.where(valid[..., None], xs, jnp.zeros_like(xs))

  ys, final_carry = run_stack(config, params, xs, seq_lengths, carry, dropout_rng=dropout_rng)

  if config.time_major:
    outputs = ys.reshape(num_steps, *batch_shape, ys.shape[-1])
  else:
    outputs = jnp.swapaxes(ys, 0, 1).reshape(*batch_shape, num_steps, ys.shape[-1])
  final_carry = jax.tree.map(
    lambda leaf: leaf.reshape(leaf.shape[0], *batch_shape, leaf.shape[-1]), final_carry
  )
  return outputs, final_carry


# Called eagerly (a notebook), each layer call traced and compiled its loops anew: 1.9-2.4 s
# for a small 2-layer bidirectional LSTM, every time. Keyed on the (hashable) config and
# dtype, a repeated eager call compiles nothing. Only for concrete arguments: a jit boundary
# inside a differentiated program made the residuals of `checkpoint_every` 5x larger
# (4.1 -> 20.1 MiB in docs/guide/performance.md's example).
_run_checked_eagerly = jax.jit(_run_checked, static_argnums=(0, 1))


def step_layers(
  config: LayerConfig,
  params: Sequence[CellParams],
  x_t: Array,
  carry: Carry | None = None,
  *,
  dtype=None,
) -> tuple[Array, Carry]:
  """Returns ``(y_t, new_carry)``: one time step of a unidirectional stack.

  The same parameters as ``apply_layers``; stepping through a sequence
  reproduces its ``outputs`` and ``final_carry``.

  Args:
    config: the layer's hyper-parameters (``bidirectional`` must be False).
    params: ``L`` cell parameters.
    x_t: ``[*batch, F]``, one step of input.
    carry: like ``final_carry``, ``[L, *batch, H_out]`` (``LSTMState`` for
      LSTM); ``None`` for zeros.
    dtype: compute dtype; ``None`` promotes the inputs' and parameters' dtypes.

  Returns:
    y_t: ``[*batch, H_out]``, the last layer's output.
    new_carry: the state after this step, shaped like ``carry``.
  """
  if config.bidirectional:
    raise ValueError(
      '`step` needs a unidirectional layer: the backward direction of a bidirectional layer '
      'reads the whole sequence first. Call the layer on the sequence instead.'
    )
  if not hasattr(x_t, 'ndim') or x_t.ndim < 2:
    raise ValueError(
      f'`x_t` must have shape [*batch, F] with at least one batch axis, got shape {getattr(x_t, "shape", x_t)}.'
    )
  if not jnp.issubdtype(x_t.dtype, jnp.floating):
    raise TypeError(f'`x_t` must be floating point, got dtype {x_t.dtype}.')
  expected = params[0].w_ih.shape[0]
  checks.check_features(
    x_t.shape[-1], expected, f'w_ih of {config.param_names[0]} is {list(params[0].w_ih.shape)}', 'x_t'
  )
  if carry is not None:
    carry = checks.check_initial_carry(
      carry, config, x_t.shape[:-1], compute_dtype(x_t, params, dtype), 'carry'
    )
  # One step is a sequence of length one: the very same code path as the sequence call.
  one_step = dataclasses.replace(config, time_major=True)
  outputs, new_carry = apply_layers(one_step, params, x_t[None], None, carry, dtype=dtype)
  return outputs[0], new_carry
