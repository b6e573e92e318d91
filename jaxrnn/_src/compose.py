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
from jaxrnn._src.config import LayerConfig
from jaxrnn._src.fused import fused_scan_layer
from jaxrnn._src.fused import refuse_forward_mode
from jaxrnn._src.parallel import associative_scan_layer
from jaxrnn._src.parallel import default_scan_mode
from jaxrnn._src.parallel import is_linear
from jaxrnn._src.scan import default_hoist_input_projection
from jaxrnn._src.scan import default_unroll
from jaxrnn._src.scan import scan_layer
from jaxrnn._src.torch_cells import as_cell_params
from jaxrnn._src.types import Array
from jaxrnn._src.types import Carry


def zeros_carry(config: LayerConfig, batch_shape: Sequence[int], dtype=jnp.float32) -> Carry:
  """Returns the all-zeros carry, every leaf ``[L*D, *batch, ...]`` (``LSTMState`` for LSTM)."""
  rows = [
    config.row_cell(row).initial_carry(tuple(batch_shape), dtype)
    for row in range(config.num_layers * config.num_directions)
  ]
  try:
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *rows)
  except ValueError as error:  # a backward cell whose carry differs from the forward one's
    raise ValueError(
      f'the forward and backward cells must have carries of the same structure and shapes: {error}'
    ) from None


def _floating(tree) -> list[Array]:
  return [leaf for leaf in jax.tree.leaves(tree) if jnp.issubdtype(jnp.result_type(leaf), jnp.floating)]


def compute_dtype(inputs: Array, params: Sequence, dtype=None) -> jnp.dtype:
  """Returns ``dtype``, or when None the promotion of the inputs' and parameters' dtypes."""
  if dtype is not None:
    return jnp.dtype(dtype)
  return jnp.dtype(jnp.result_type(inputs.dtype, *(leaf.dtype for leaf in _floating(params[0]))))


def dropout(rng: Array, rate: float, x: Array) -> Array:
  """Returns ``x`` with entries zeroed with probability ``rate``, the rest scaled by ``1/(1-rate)``."""
  keep = jax.random.bernoulli(rng, 1.0 - rate, x.shape)
  return jnp.where(keep, x / (1.0 - rate), jnp.zeros_like(x))


def run_stack(
  config: LayerConfig,
  params: Sequence,
  xs: Array,
  seq_lengths: Array | None,
  carry: Carry,
  *,
  segment_ids: Array | None = None,
  shared_slots: int | None = None,
  dropout_rng: Array | None = None,
) -> tuple[Array, Carry]:
  """Returns ``(ys, final_carry)`` of the whole stack on time-major inputs.

  Each layer and direction runs on the fastest path its cell allows: the fused
  backward when the cell has a ``fused_kind``, the masked loop with the input
  projection hoisted or not when it has ``project_input``, and otherwise the
  masked loop over the cell itself (autodiff), with the same guarantees.

  Args:
    config: the layer's cells and options.
    params: ``L*D`` cell parameters, index ``layer*D + direction``.
    xs: ``[T, B, *features]``.
    seq_lengths: ``[B]`` integers in ``[0, T]`` or ``None``.
    carry: leaves ``[L*D, B, ...]``, in the carry-row order of ``params``;
      with ``segment_ids``, ``[L*D, B, S, ...]``: each packed sequence's, or
      ``[L*D, B, ...]`` shared by a row's sequences, with ``shared_slots``.
    segment_ids: ``[T, B]`` packed sequences (exclusive with ``seq_lengths``).
    shared_slots: ``S`` when ``carry`` is shared by the sequences of a row.
    dropout_rng: a key to drop outputs of every layer but the last; ``None``
      for no dropout.

  Returns:
    ys: ``[T, B, ..., D*H_out]``, the last layer's outputs, forward half first.
    final_carry: leaves ``[L*D, B, ...]`` (``[L*D, B, S, ...]`` with
      ``segment_ids``), row ``layer*D + direction``.
  """
  directions = config.num_directions
  hoist = config.hoist_input_projection
  if hoist is None:
    hoist = default_hoist_input_projection()
  recurrent_dropout = dropout_rng is not None and config.recurrent_dropout > 0
  fused = config.use_fused_backward and not recurrent_dropout
  options = dict(
    unroll=default_unroll() if config.unroll is None else config.unroll,
    checkpoint_every=config.checkpoint_every,
  )

  finals = []
  for layer in range(config.num_layers):
    outputs = []
    for direction in range(directions):
      row = layer * directions + direction
      cell = config.row_cell(row)
      carry_row = jax.tree.map(operator.itemgetter(row), carry)
      carry_row = widen_carry(cell, carry_row)  # e.g. the LSTM cell state accumulates in float32
      reverse = direction == 1
      step = cell.recurrence if hasattr(cell, 'project_input') else cell
      if recurrent_dropout:  # keys apart from those of dropout between layers (fold_in(rng, layer))
        key = jax.random.fold_in(dropout_rng, _RECURRENT_DROPOUT_STREAM + row)
        # Packed: one mask per row, which the row's sequences share.
        shape_of = carry_row
        if segment_ids is not None and shared_slots is None:  # one per sequence: a row's shape
          shape_of = jax.tree.map(operator.itemgetter((slice(None), 0)), carry_row)
        masks = _recurrent_dropout_masks(cell, shape_of, key, config.recurrent_dropout)
        step = _with_masks(step, masks)
      if associative(config, cell):  # linear in the carry: one associative scan (SPEC §12)
        final, ys = associative_scan_layer(
          cell,
          params[row],
          carry_row,
          xs,
          seq_lengths,
          segment_ids=segment_ids,
          num_segments=shared_slots,
          reverse=reverse,
          carry_mask=masks[0] if recurrent_dropout else None,
        )
      elif fused:
        final, ys = fused_scan_layer(
          cell.fused_kind,
          as_cell_params(params[row]),
          carry_row,
          xs,
          seq_lengths,
          segment_ids=segment_ids,
          num_segments=shared_slots,
          reverse=reverse,
          hoist_input_projection=hoist,
          pallas=config.use_pallas,
          **options,
        )
      else:  # the masked loop, with the cell's input projection when it has one
        projected = hasattr(cell, 'project_input')
        final, ys = scan_layer(
          step,
          params[row],
          carry_row,
          xs,
          seq_lengths,
          segment_ids=segment_ids,
          num_segments=shared_slots,
          reverse=reverse,
          input_projection=cell.project_input if projected else None,
          hoist_input_projection=hoist and projected,
          feature_ndim=config.feature_ndim,
          remat=config.remat,
          **options,
        )
      finals.append(final)
      outputs.append(ys)
    xs = outputs[0] if directions == 1 else jnp.concatenate(outputs, axis=-1)
    if dropout_rng is not None and config.dropout > 0 and layer < config.num_layers - 1:
      xs = dropout(jax.random.fold_in(dropout_rng, layer), config.dropout, xs)

  final_carry = jax.tree.map(lambda *leaves: jnp.stack(leaves), *finals)
  return xs, cast_floating(final_carry, xs.dtype)


_RECURRENT_DROPOUT_STREAM = 1 << 30


def _hidden_leaves(cell, carry: Carry):
  """Returns a pytree of bools like ``carry``: the leaves recurrent dropout masks.

  The cell's ``hidden_leaves`` hook says (LSTM: ``h``, not ``c``); without it,
  every floating-point leaf.
  """
  if hasattr(cell, 'hidden_leaves'):
    return cell.hidden_leaves(carry)
  return jax.tree.map(lambda leaf: bool(jnp.issubdtype(leaf.dtype, jnp.floating)), carry)


def associative(config: LayerConfig, cell) -> bool:
  """Whether ``cell`` runs with the parallel driver (``scan_mode``, SPEC §12)."""
  if not is_linear(cell) or config.scan_mode == 'sequential':
    return False
  return config.scan_mode == 'associative' or default_scan_mode() == 'associative'


def _recurrent_dropout_masks(cell, carry: Carry, key: Array, rate: float) -> list:
  """Returns one dropout mask per carry leaf (None for leaves not masked), drawn once per sequence.

  Variational (recurrent) dropout, Gal & Ghahramani (2016), Keras's
  ``recurrent_dropout``: the mask is drawn once per sequence (and layer and
  direction) and reused at every step on the hidden state the step reads; the
  carry itself is kept unmasked, so padded steps and the final carry are
  unaffected.
  """
  leaves, structure = jax.tree.flatten(carry)
  flags = structure.flatten_up_to(_hidden_leaves(cell, carry))
  keys = jax.random.split(key, len(leaves))
  return [
    jax.random.bernoulli(k, 1.0 - rate, leaf.shape).astype(leaf.dtype) / (1.0 - rate) if flag else None
    for k, leaf, flag in zip(keys, leaves, flags, strict=True)
  ]


def _with_masks(step, masks: list):
  """Returns ``step`` reading its carry through ``masks`` (one per leaf, None: unmasked)."""

  def dropped(params, carry, x):
    structure = jax.tree.structure(carry)
    carry_leaves = structure.flatten_up_to(carry)
    carry_leaves = [
      c if m is None else c * m.astype(c.dtype) for c, m in zip(carry_leaves, masks, strict=True)
    ]
    return step(params, structure.unflatten(carry_leaves), x)

  return dropped


def cast_floating(tree, dtype):
  """Returns ``tree`` with its floating-point leaves cast to ``dtype`` (integer leaves kept)."""
  return jax.tree.map(
    lambda leaf: leaf.astype(dtype) if jnp.issubdtype(jnp.result_type(leaf), jnp.floating) else leaf,
    tree,
  )


def widen_carry(cell, carry: Carry) -> Carry:
  """Returns ``carry`` through the cell's ``widen_carry`` hook (e.g. the LSTM cell state in float32)."""
  return cell.widen_carry(carry) if hasattr(cell, 'widen_carry') else carry


def apply_layers(
  config: LayerConfig,
  params: Sequence,
  inputs: Array,
  seq_lengths: Array | None = None,
  initial_carry: Carry | None = None,
  *,
  segment_ids: Array | None = None,
  num_segments: int | None = None,
  dtype=None,
  dropout_rng: Array | None = None,
  deterministic: bool = True,
) -> tuple[Array, Carry]:
  """Returns ``(outputs, final_carry)`` of a recurrent layer (SPEC §2, packed: §11).

  Args:
    config: the layer's hyper-parameters.
    params: ``L*D`` cell parameters, index ``layer*D + direction``.
    inputs: ``[*batch, T, F]``, or ``[T, *batch, F]`` when ``config.time_major``.
    seq_lengths: integers ``[*batch]`` in ``[0, T]``; ``None`` for all ``T``.
    initial_carry: like ``final_carry``; ``None`` for zeros. With
      ``segment_ids`` either ``[L*D, *batch, ...]`` (shared by the sequences of
      a row) or ``[L*D, *batch, S, ...]`` (one per sequence).
    segment_ids: integers ``[*batch, T]`` (time-major ``[T, *batch]``):
      sequences packed in rows, 0 for padding, ids ``1..S``.
    num_segments: ``S``; ``None`` is the largest id (concrete ids only).
    dtype: compute dtype; ``None`` promotes the inputs' and parameters' dtypes.
    dropout_rng: key for dropout between layers (needed when
      ``deterministic=False`` and ``config.dropout > 0``).
    deterministic: disables dropout.

  Returns:
    outputs: ``[*batch, T, D*H_out]`` (time-major ``[T, *batch, D*H_out]``),
      zeros at ``t >= seq_lengths``.
    final_carry: ``[L*D, *batch, H_out]`` (``LSTMState`` with
      ``c: [L*D, *batch, H]`` for LSTM); with ``segment_ids``
      ``[L*D, *batch, S, ...]``, index ``s - 1`` for sequence ``s``.
  """
  inputs, batch_shape, num_steps, in_features = checks.check_inputs(
    inputs, config.time_major, config.feature_ndim
  )
  checks.check_params_fit(config, params[0], in_features)
  dtype = compute_dtype(inputs, params, dtype)
  seq_lengths = checks.check_seq_lengths(
    seq_lengths, batch_shape, num_steps, inputs.shape, config.time_major, feature_ndim=config.feature_ndim
  )
  if segment_ids is None and num_segments is not None:
    raise ValueError('`num_segments` was given without `segment_ids`.')
  shared_slots = None  # S when packed sequences share the initial carry of their row
  if segment_ids is None:
    carry = _initial_carry(config, initial_carry, batch_shape, dtype)
  else:
    segment_ids, num_segments = checks.check_segment_ids(
      segment_ids,
      num_segments,
      inputs.shape[: inputs.ndim - config.feature_ndim],
      inputs.shape,
      0 if config.time_major else len(batch_shape),
      seq_lengths,
      layout=checks.layout_of(config.time_major, config.feature_ndim),
    )
    carry, shared = _packed_initial_carry(config, initial_carry, batch_shape, num_segments, dtype)
    shared_slots = num_segments if shared else None

  use_dropout = config.draws_dropout(deterministic)
  if use_dropout and dropout_rng is None:
    raise ValueError(
      f'`dropout={config.dropout}`, `recurrent_dropout={config.recurrent_dropout}` with deterministic=False '
      'needs `dropout_rng`.'
    )

  if config.use_fused_backward and not (
    use_dropout and config.recurrent_dropout > 0
  ):  # here, outside the jit below, forward mode is still visible
    refuse_forward_mode(params, inputs, carry, initial_carry)
  args = (
    config,
    dtype,
    shared_slots,
    list(params),
    inputs,
    seq_lengths,
    segment_ids,
    carry,
    dropout_rng if use_dropout else None,
  )
  if any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(args[3:])):
    return _run_checked(*args)  # traced (jit, grad, vmap): part of the caller's program
  return _run_checked_eagerly(*args)


def _initial_carry(
  config: LayerConfig, initial_carry, batch_shape, dtype, arg: str = 'initial_carry'
) -> Carry:
  """Returns the checked ``initial_carry``, or zeros where it is None."""
  if initial_carry is None:
    return zeros_carry(config, batch_shape, dtype)
  return checks.check_initial_carry(initial_carry, config, batch_shape, dtype, arg)


def _packed_initial_carry(
  config: LayerConfig, initial_carry, batch_shape, num_segments: int, dtype
) -> tuple[Carry, bool]:
  """Returns the checked initial carry of packed sequences and whether the sequences of a row share it.

  ``initial_carry`` may hold one per sequence, leaves ``[L*D, *batch, S, ...]``,
  or one per row, ``[L*D, *batch, ...]`` (told apart by the rank of its first
  leaf); None is zeros, shared. Shared, the loop resets without a per-step
  select over the ``S`` slots.
  """
  shared = jax.eval_shape(lambda: zeros_carry(config, batch_shape, dtype))
  leaves = jax.tree.leaves(initial_carry)
  if initial_carry is None or (leaves and jnp.ndim(leaves[0]) == jax.tree.leaves(shared)[0].ndim):
    return _initial_carry(config, initial_carry, batch_shape, dtype), True
  return _initial_carry(config, initial_carry, (*batch_shape, num_segments), dtype), False


def _run_checked(config, dtype, shared_slots, params, inputs, seq_lengths, segment_ids, carry, dropout_rng):
  """The part of ``apply_layers`` after its checks."""
  feature_ndim = config.feature_ndim
  features = inputs.shape[inputs.ndim - feature_ndim :]
  if config.time_major:
    num_steps, batch_shape = inputs.shape[0], inputs.shape[1 : inputs.ndim - feature_ndim]
  else:
    num_steps, batch_shape = inputs.shape[-1 - feature_ndim], inputs.shape[: inputs.ndim - feature_ndim - 1]
  batch_size = math.prod(batch_shape)
  xs = inputs.astype(dtype)
  if config.time_major:
    xs = xs.reshape(num_steps, batch_size, *features)
  else:
    xs = jnp.swapaxes(xs.reshape(batch_size, num_steps, *features), 0, 1)
  params = [cast_floating(jax.tree.map(jnp.asarray, p), dtype) for p in params]
  # Carry leaves [L*D, *batch, ...] -> [L*D, B, ...]: the loops see one batch axis.
  batch_ndim = len(batch_shape)
  carry = jax.tree.map(
    lambda leaf: leaf.reshape(leaf.shape[0], batch_size, *leaf.shape[1 + batch_ndim :]), carry
  )
  if seq_lengths is not None:
    seq_lengths = seq_lengths.reshape(batch_size)
    # Padding is never read: zero it once, so that NaN or inf there cannot reach the
    # gradients through the masked-out branch (0 * inf). Later layers read outputs,
    # which are already zero at padding.
    valid = jnp.arange(num_steps)[:, None] < seq_lengths[None, :]
    xs = jnp.where(valid.reshape(valid.shape + (1,) * feature_ndim), xs, jnp.zeros_like(xs))
  if segment_ids is not None:  # [T, B], padding zeroed as above
    if config.time_major:
      segment_ids = segment_ids.reshape(num_steps, batch_size)
    else:
      segment_ids = jnp.swapaxes(segment_ids.reshape(batch_size, num_steps), 0, 1)
    valid = segment_ids > 0
    xs = jnp.where(valid.reshape(valid.shape + (1,) * feature_ndim), xs, jnp.zeros_like(xs))

  ys, final_carry = run_stack(
    config,
    params,
    xs,
    seq_lengths,
    carry,
    segment_ids=segment_ids,
    shared_slots=shared_slots,
    dropout_rng=dropout_rng,
  )

  out_features = ys.shape[2:]
  if config.time_major:
    outputs = ys.reshape(num_steps, *batch_shape, *out_features)
  else:
    outputs = jnp.swapaxes(ys, 0, 1).reshape(*batch_shape, num_steps, *out_features)
  final_carry = jax.tree.map(
    lambda leaf: leaf.reshape(leaf.shape[0], *batch_shape, *leaf.shape[2:]), final_carry
  )
  return outputs, final_carry


# Called eagerly (a notebook), each layer call traced and compiled its loops anew: 1.9-2.4 s
# for a small 2-layer bidirectional LSTM, every time. Keyed on the (hashable) config and
# dtype, a repeated eager call compiles nothing. Only for concrete arguments: a jit boundary
# inside a differentiated program made the residuals of `checkpoint_every` 5x larger
# (4.1 -> 20.1 MiB in docs/guide/performance.md's example).
_run_checked_eagerly = jax.jit(_run_checked, static_argnums=(0, 1, 2))


def step_layers(
  config: LayerConfig,
  params: Sequence,
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
  feature_ndim = config.feature_ndim
  in_features = checks.check_step_input(x_t, feature_ndim)
  checks.check_params_fit(config, params[0], in_features, 'x_t')
  if carry is not None:
    carry = checks.check_initial_carry(
      carry, config, x_t.shape[: x_t.ndim - feature_ndim], compute_dtype(x_t, params, dtype), 'carry'
    )
  # One step is a sequence of length one: the very same code path as the sequence call.
  one_step = dataclasses.replace(config, time_major=True)
  outputs, new_carry = apply_layers(one_step, params, x_t[None], None, carry, dtype=dtype)
  return outputs[0], new_carry
