"""User-facing input checks (SPEC §6): trace-time, naming the argument and both shapes."""

from __future__ import annotations

from collections.abc import Mapping

import chex
import jax
import jax.numpy as jnp
import numpy as np

from jaxrnn._src.config import LayerConfig
from jaxrnn._src.types import Array
from jaxrnn._src.types import Carry
from jaxrnn._src.types import LSTMState


def layout_of(time_major: bool, feature_ndim: int = 1) -> str:
  """Returns the layout of a layer's inputs in words, for error messages."""
  features = 'F' if feature_ndim == 1 else '*features'
  if time_major:
    return f'[T, *batch, {features}] (time_major=True)'
  return f'[*batch, T, {features}] (time_major=False)'


def check_inputs(
  inputs, time_major: bool, feature_ndim: int = 1
) -> tuple[Array, tuple[int, ...], int, object]:
  """Returns ``(inputs, batch_shape, T, F)`` after checking rank and dtype.

  ``F`` is the last axis, or the tuple of the last ``feature_ndim`` axes when
  ``feature_ndim > 1``.
  """
  layout = layout_of(time_major, feature_ndim)
  if not hasattr(inputs, 'shape') or not hasattr(inputs, 'dtype'):
    raise TypeError(f'`inputs` must be an array of shape {layout}, got {type(inputs).__name__}.')
  inputs = jnp.asarray(inputs)
  if inputs.ndim < 2 + feature_ndim:
    raise ValueError(
      f'`inputs` must have shape {layout} with at least one batch axis: '
      f'expected rank >= {2 + feature_ndim}, got shape {inputs.shape}. For a single sequence add a batch '
      'axis, e.g. `inputs[None]`.'
    )
  if not jnp.issubdtype(inputs.dtype, jnp.floating):
    raise TypeError(
      f'`inputs` must be floating point, got dtype {inputs.dtype}. For token ids, embed them '
      'first (e.g. with nn.Embed).'
    )
  leading = inputs.shape[: inputs.ndim - feature_ndim]
  if time_major:
    batch_shape, num_steps = leading[1:], leading[0]
  else:
    batch_shape, num_steps = leading[:-1], leading[-1]
  features = inputs.shape[-1] if feature_ndim == 1 else tuple(inputs.shape[-feature_ndim:])
  return inputs, batch_shape, num_steps, features


def check_step_input(x_t, feature_ndim: int = 1, arg: str = 'x_t'):
  """Returns the features ``F`` of one step ``x_t: [*batch, F]`` after checking rank and dtype.

  ``F`` is the tuple of the last ``feature_ndim`` axes when ``feature_ndim > 1``.
  """
  features = 'F' if feature_ndim == 1 else '*features'
  if not hasattr(x_t, 'ndim') or x_t.ndim < 1 + feature_ndim:
    raise ValueError(
      f'`{arg}` must have shape [*batch, {features}] with at least one batch axis, got shape '
      f'{getattr(x_t, "shape", x_t)}.'
    )
  if not jnp.issubdtype(x_t.dtype, jnp.floating):
    raise TypeError(f'`{arg}` must be floating point, got dtype {x_t.dtype}.')
  return x_t.shape[-1] if feature_ndim == 1 else tuple(x_t.shape[-feature_ndim:])


def check_params_fit(config: LayerConfig, params, in_features, arg: str = 'inputs') -> None:
  """Raises ValueError when the first layer's ``params`` were made for other input features.

  Built-in cells name ``w_ih``; any other cell is compared with the shapes its
  ``init`` gives for ``in_features`` (traced only, nothing is computed).
  """
  group = config.param_names[0]
  w_ih = params.get('w_ih') if isinstance(params, Mapping) else getattr(params, 'w_ih', None)
  if w_ih is not None and hasattr(config.cell, 'param_specs'):
    check_features(in_features, w_ih.shape[0], f'w_ih of {group} is {list(w_ih.shape)}', arg)
    return
  expected = jax.eval_shape(lambda key: config.cell.init(key, in_features), jax.random.key(0))
  expected_shapes = jax.tree.map(lambda a: tuple(a.shape), expected)
  actual_shapes = jax.tree.map(lambda a: tuple(np.shape(a)), params)
  if expected_shapes != actual_shapes:
    raise ValueError(
      f'`{arg}` has features {in_features} (its last {config.feature_ndim} axes), but the parameters '
      f'of {group} do not fit them: {type(config.cell).__name__}.init gives {expected_shapes} for these '
      f'features, the parameters have {actual_shapes}.'
    )


def _as_array(value):
  """Returns JAX arrays and tracers as they are, anything else (lists, PyTorch tensors) via NumPy."""
  if isinstance(value, (jax.Array, np.ndarray, jax.core.Tracer)):
    return value
  if hasattr(value, 'detach'):  # a PyTorch tensor, possibly on a GPU
    value = value.detach().cpu()
  return np.asarray(value)


def check_batch_shape(batch_shape, arg: str = 'batch_shape') -> tuple[int, ...]:
  """Returns ``batch_shape`` as a tuple of non-negative ints, or raises naming ``arg``."""
  if isinstance(batch_shape, (int, np.integer)) and not isinstance(batch_shape, bool):
    raise TypeError(
      f'`{arg}` must be a tuple of batch sizes such as ({batch_shape},), got the int {batch_shape}.'
    )
  try:
    shape = tuple(batch_shape)
  except TypeError:
    raise TypeError(f'`{arg}` must be a tuple of batch sizes such as (B,), got {batch_shape!r}.') from None
  if not all(isinstance(n, (int, np.integer)) and not isinstance(n, bool) and n >= 0 for n in shape):
    raise ValueError(f'`{arg}` must hold non-negative ints, got {shape}.')
  return tuple(int(n) for n in shape)


def check_features(in_features: int, expected: int, param_name: str, arg: str = 'inputs') -> None:
  if in_features != expected:
    raise ValueError(
      f'`{arg}` has F={in_features} features (last axis) but the parameters expect '
      f'F={expected} ({param_name}).'
    )


def _other_layout_batch(inputs_shape, time_major: bool, feature_ndim: int = 1) -> tuple[int, ...]:
  """The batch shape of ``inputs_shape`` read in the other layout (``feature_ndim`` trailing feature axes)."""
  end = len(inputs_shape) - feature_ndim
  if time_major:  # read as batch-major instead
    return tuple(inputs_shape[: end - 1])
  return tuple(inputs_shape[1:end])


def check_seq_lengths(
  seq_lengths,
  batch_shape,
  num_steps: int,
  inputs_shape,
  time_major: bool,
  *,
  arg: str = 'inputs',
  layout: str | None = None,
  feature_ndim: int = 1,
) -> Array | None:
  """Returns ``seq_lengths`` as int32 ``[*batch]``, clipped to ``[0, T]`` if traced.

  Concrete lengths outside ``[0, T]`` raise instead of being clipped. ``arg``
  names the sequences in error messages and ``layout``, if given, describes
  their layout instead of ``time_major`` and ``feature_ndim`` (the number of
  trailing feature axes, e.g. 3 for a 2-D ConvLSTM's ``[H, W, C]``).
  """
  if seq_lengths is None:
    return None
  seq_lengths = _as_array(seq_lengths)
  if not jnp.issubdtype(seq_lengths.dtype, jnp.integer):
    raise TypeError(f'`seq_lengths` must be integers, got dtype {seq_lengths.dtype}.')
  shape = tuple(np.shape(seq_lengths))
  if shape != tuple(batch_shape):
    hint = ''
    if layout is None and shape == _other_layout_batch(inputs_shape, time_major, feature_ndim):
      hint = f' It matches the other layout: did you mean time_major={not time_major}?'
    raise ValueError(
      f'`seq_lengths` must have the batch shape {tuple(batch_shape)} of `{arg}` '
      f'{tuple(inputs_shape)} laid out as {layout or layout_of(time_major, feature_ndim)}, got shape '
      f'{shape}.{hint}'
    )
  if isinstance(seq_lengths, jax.core.Tracer):
    return jnp.clip(seq_lengths, 0, num_steps).astype(jnp.int32)
  values = np.asarray(seq_lengths)
  if values.size and (values.min() < 0 or values.max() > num_steps):
    raise ValueError(
      f'`seq_lengths` must lie in [0, T] = [0, {num_steps}], got values in '
      f'[{values.min()}, {values.max()}] ({arg} {tuple(inputs_shape)} laid out as '
      f'{layout or layout_of(time_major, feature_ndim)}).'
    )
  return jnp.asarray(values, jnp.int32)


def check_scan_args(
  carry, xs, seq_lengths, feature_ndim: int = 1, segment_ids=None, num_segments=None
) -> tuple[Array | None, Array | None]:
  """Checks ``scan_layer``'s arguments on entry; returns ``(seq_lengths, segment_ids)`` as int32 arrays or None.

  ``xs: [T, *batch, *features]`` with ``feature_ndim`` feature axes; every carry
  leaf and ``seq_lengths`` must have the batch shape (with ``segment_ids``
  ``[T, *batch]``, carry leaves ``[*batch, S, ...]``). Concrete lengths outside
  ``[0, T]`` raise; traced ones are clipped to ``[0, T]``.
  """
  layout = '[T, *batch, F]' if feature_ndim == 1 else '[T, *batch, *features]'
  if not hasattr(xs, 'shape') or xs.ndim < 1 + feature_ndim:
    raise ValueError(f'`xs` must have shape {layout}, got {getattr(xs, "shape", type(xs).__name__)}.')
  batch_shape = tuple(xs.shape[1 : xs.ndim - feature_ndim])
  leaves = jax.tree_util.tree_leaves_with_path(carry)
  prefix, what = batch_shape, 'leading batch shape'
  if segment_ids is not None and leaves and num_segments is None:
    first = tuple(np.shape(leaves[0][1]))
    prefix, what = batch_shape + first[len(batch_shape) : len(batch_shape) + 1], '[*batch, S] prefix'
  for path, leaf in leaves:
    shape = tuple(np.shape(leaf))
    if shape[: len(prefix)] != prefix:
      raise ValueError(
        f'`carry{jax.tree_util.keystr(path)}` must have {what} {prefix} of `xs` '
        f'{tuple(xs.shape)} ({layout}), got shape {shape}.'
      )
  if segment_ids is not None:
    ids, _ = check_segment_ids(
      segment_ids,
      prefix[-1] if num_segments is None else num_segments,
      (xs.shape[0], *batch_shape),
      xs.shape,
      0,
      seq_lengths,
      arg='xs',
      layout=layout,
    )
    return None, ids
  if seq_lengths is None:
    return None, None
  shape = tuple(np.shape(seq_lengths))
  if shape != batch_shape:
    raise ValueError(
      f'`seq_lengths` must have shape {batch_shape}, the batch shape of `xs` {tuple(xs.shape)} '
      f'({layout}), got shape {shape}.'
    )
  # dtype and range: the layers' own check
  lengths = check_seq_lengths(seq_lengths, batch_shape, xs.shape[0], xs.shape, True, arg='xs', layout=layout)
  return lengths, None


def check_segment_ids(
  segment_ids,
  num_segments,
  ids_shape,
  inputs_shape,
  time_axis: int,
  seq_lengths=None,
  *,
  arg: str = 'inputs',
  layout: str = '',
) -> tuple[Array, int]:
  """Returns ``(segment_ids as int32, S)`` after checking them (SPEC §11).

  ``ids_shape`` is the shape of ``arg`` without its feature axes and
  ``time_axis`` the position of ``T`` in it. Concrete ids must lie in ``[0, S]``
  with each positive id one contiguous run per row; traced ids outside
  ``[0, S]`` are read as padding. ``num_segments=None`` is the largest id,
  which needs concrete ids.
  """
  if seq_lengths is not None:
    raise ValueError(
      '`seq_lengths` and `segment_ids` are exclusive: `seq_lengths` is the one-sequence-per-row case '
      'of `segment_ids` (ids 1 on the first seq_lengths[b] steps, 0 after).'
    )
  ids = _as_array(segment_ids)
  if not jnp.issubdtype(ids.dtype, jnp.integer):
    raise TypeError(f'`segment_ids` must be integers (0 for padding, 1..S), got dtype {ids.dtype}.')
  shape, ids_shape = tuple(np.shape(ids)), tuple(ids_shape)
  if shape != ids_shape:
    hint = ''
    if sorted(shape) == sorted(ids_shape) and len(shape) == 2:
      hint = ' It is the transpose: mind `time_major`.'
    raise ValueError(
      f'`segment_ids` must have shape {ids_shape}, the shape of `{arg}` {tuple(inputs_shape)} laid out as '
      f'{layout} without its feature axes, got shape {shape}.{hint}'
    )
  traced = isinstance(ids, jax.core.Tracer)
  if num_segments is None:
    if traced:
      raise ValueError(
        '`num_segments` must be given (a Python int S) when `segment_ids` are traced (under jit): '
        'it fixes the shape of final_carry, [L*D, *batch, S, ...].'
      )
    num_segments = max(int(np.max(ids, initial=0)), 1)
  if isinstance(num_segments, bool) or not isinstance(num_segments, (int, np.integer)) or num_segments < 1:
    raise TypeError(
      f'`num_segments` must be a positive Python int (the number of slots S per row, static under jit), '
      f'got {num_segments!r}.'
    )
  num_segments = int(num_segments)
  if traced:
    return jnp.where((ids < 0) | (ids > num_segments), 0, ids).astype(jnp.int32), num_segments
  values = np.moveaxis(np.asarray(ids), time_axis, -1)  # [*batch, T]
  if values.size and (values.min() < 0 or values.max() > num_segments):
    bad = np.argwhere((values < 0) | (values > num_segments))[0]
    raise ValueError(
      f'`segment_ids` must lie in [0, num_segments] = [0, {num_segments}] (0 for padding), got '
      f'{values[tuple(bad)]} in row {tuple(bad[:-1].tolist())} at step {bad[-1]}.'
    )
  _check_contiguous(values)
  return jnp.asarray(np.asarray(ids), jnp.int32), num_segments


def _check_contiguous(values: np.ndarray) -> None:
  """Raises naming the first row whose positive id occurs in more than one run (``values: [*batch, T]``)."""
  rows = values.reshape(-1, values.shape[-1]) if values.ndim else values.reshape(1, -1)
  before = np.concatenate([np.full((rows.shape[0], 1), -1), rows[:, :-1]], axis=1)
  row, step = np.nonzero((rows != before) & (rows > 0))  # the first step of every run
  keys = row * (int(rows.max(initial=0)) + 1) + rows[row, step]
  unique, first, counts = np.unique(keys, return_index=True, return_counts=True)
  if (counts > 1).any():
    r, t = row[first[counts > 1][0]], step[first[counts > 1][0]]
    segment = rows[r, t]
    runs = step[(row == r) & (rows[row, step] == segment)].tolist()
    batch_index = tuple(np.unravel_index(r, values.shape[:-1])) if values.ndim > 1 else ()
    raise ValueError(
      f'`segment_ids` must mark each sequence as one contiguous run of steps, but id {segment} in row '
      f'{tuple(int(i) for i in batch_index)} has runs starting at steps {runs}. Give each sequence of a '
      'row its own id.'
    )


def carry_mix_up_hint(expected, actual) -> str:
  """Returns a sentence naming the likely mix-up of carry conventions, or ``''``.

  jaxrnn's LSTM carry is ``LSTMState(h, c)``; Flax's LSTM cells carry a plain
  ``(c, h)``. With equal shapes only the type tells them apart.
  """
  if isinstance(expected, LSTMState) and type(actual) in (tuple, list) and len(actual) == 2:
    return (
      " A plain 2-tuple here may be Flax's (c, h): jaxrnn's LSTM carry is LSTMState(h, c); "
      'jaxrnn.interop.from_flax_carry converts Flax carries.'
    )
  if isinstance(actual, LSTMState) and not isinstance(expected, LSTMState):
    if type(expected) is tuple and len(expected) == 2:
      return (
        " This cell carries a plain tuple in Flax's order (c, h); an LSTMState is jaxrnn's (h, c): "
        'pass (state.c, state.h).'
      )
  if isinstance(actual, list) and not isinstance(expected, list):
    return (
      ' A list of per-row carries? jaxrnn.interop.from_flax_carry(rows, layer) stacks them into '
      "the layer's carry."
    )
  return ''


def _check_carry_array(name: str, value, shape, dtype, letters: str) -> Array:
  if not hasattr(value, 'shape') or not hasattr(value, 'dtype'):
    raise TypeError(f'`{name}` must be an array of shape {shape}, got {type(value).__name__}.')
  value = jnp.asarray(value)
  hint = ''
  if value.ndim == len(shape) - 1 and tuple(value.shape) == tuple(shape[1:]):
    hint = (
      ': it lacks the leading [L*D] axis of one row per layer and direction (a Flax cell carry '
      'converts with jaxrnn.interop.from_flax_carry([carry], layer))'
    )
  chex.assert_shape(
    value,
    shape,
    custom_message=f'`{name}` must have shape [L*D, *batch, {letters}] = {shape}{hint}',
    exception_type=ValueError,
  )
  if value.dtype != dtype:
    raise TypeError(
      f'`{name}` has dtype {value.dtype} but the layer computes in {jnp.dtype(dtype)}; '
      "cast it or set the layer's `dtype`."
    )
  return value


def check_initial_carry(
  initial_carry, config: LayerConfig, batch_shape, dtype, arg: str = 'initial_carry'
) -> Carry:
  """Returns ``initial_carry`` (an ``LSTMState`` for LSTM) after checking structure and shapes.

  ``arg`` is the argument's name in error messages. For an LSTM a plain
  ``(h, c)`` tuple is accepted (SPEC §2, PyTorch's order); Flax's ``(c, h)``
  is caught where the shapes tell it (``proj_size``, or one axis short), the
  rest of the time only the documentation and ``from_flax_carry`` can.
  """
  from jaxrnn._src.compose import zeros_carry  # compose imports this module

  expected = jax.eval_shape(lambda: zeros_carry(config, batch_shape, dtype))
  if isinstance(expected, LSTMState):
    if (
      hasattr(initial_carry, 'shape')
      or not isinstance(initial_carry, (tuple, list))
      or len(initial_carry) != 2
    ):
      got = (
        f'an array of shape {initial_carry.shape}'
        if hasattr(initial_carry, 'shape')
        else f'a {type(initial_carry).__name__} of {len(initial_carry)} items'
        if isinstance(initial_carry, (tuple, list))
        else repr(type(initial_carry).__name__)
      )
      raise TypeError(
        f'`{arg}` of an LSTM must be LSTMState(h, c) or a (h, c) tuple, got {got}.'
        f'{carry_mix_up_hint(expected, initial_carry) if isinstance(initial_carry, list) else ""}'
      )
    h, c = initial_carry
    if isinstance(h, (tuple, list)):
      raise TypeError(
        f'`{arg}` of an LSTM must be LSTMState(h, c) with arrays h and c, got a '
        f'{type(initial_carry).__name__} of {type(h).__name__}s.{carry_mix_up_hint(expected, [h, c])}'
      )
    if not isinstance(initial_carry, LSTMState) and expected.h.shape != expected.c.shape:
      swapped = (tuple(np.shape(h)), tuple(np.shape(c))) == (expected.c.shape, expected.h.shape)
      if swapped:
        raise ValueError(
          f"`{arg}` looks like (c, h), Flax's order: its first item has the shape of c {expected.c.shape} "
          f"and its second that of h {expected.h.shape}. jaxrnn's LSTM carry is LSTMState(h, c)."
        )
    return LSTMState(
      _check_carry_array(f'{arg}.h', h, expected.h.shape, dtype, 'H_out'),
      _check_carry_array(f'{arg}.c', c, expected.c.shape, dtype, 'H'),
    )
  if isinstance(expected, jax.ShapeDtypeStruct):
    if isinstance(initial_carry, (tuple, list)):
      raise TypeError(
        f'`{arg}` of {type(config.cell).__name__} must be a single array h of shape {expected.shape}, '
        f'got a {type(initial_carry).__name__} of {len(initial_carry)} items.'
        f'{carry_mix_up_hint(expected, initial_carry)}'
      )
    return _check_carry_array(arg, initial_carry, expected.shape, expected.dtype, 'H_out')
  # Any other cell: the same pytree as its zeros, every leaf [L*D, *batch, ...].
  structure = jax.tree.structure(expected)
  if jax.tree.structure(initial_carry) != structure:
    raise TypeError(
      f'`{arg}` must have the structure of `layer.initial_carry(batch_shape)`, {structure}, '
      f'got {jax.tree.structure(initial_carry)}.{carry_mix_up_hint(expected, initial_carry)}'
    )
  paths = [jax.tree_util.keystr(path) for path, _ in jax.tree_util.tree_leaves_with_path(expected)]
  leaves = [
    _check_carry_array(f'{arg}{path}', value, want.shape, want.dtype, '...')
    for path, value, want in zip(
      paths, jax.tree.leaves(initial_carry), jax.tree.leaves(expected), strict=True
    )
  ]
  return jax.tree.unflatten(structure, leaves)
