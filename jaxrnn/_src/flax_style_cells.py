"""Flax's ``MGUCell`` and ``ConvLSTMCell``, and a layer-normalised LSTM, as cells of the open protocol (SPEC §10).

``MGUCell`` and ``ConvLSTMCell`` compute exactly the equations of
``flax.linen.MGUCell`` and ``flax.linen.ConvLSTMCell``, with Flax's default
initializers, and their parameters are Flax's own tree: the variables
``{'params': p}`` of the Flax cell run under jaxrnn as ``cell(p, carry, x)``,
and ``flax.linen.RNN(cell)``'s ``variables['params']['cell']`` is a
[`Recurrent`][jaxrnn.Recurrent] layer's ``params['l0']``. Nothing is renamed
or transposed. ``LayerNormLSTMCell`` is the LSTM of Ba et al. (2016) with
PyTorch's gate order and jaxrnn's ``LSTMState`` carry.

Like the PyTorch cells in ``cells.py``, matmuls and convolutions accumulate in
at least float32 and the gate sums stay there; the hidden state and output come
back in the carry's dtype. This file is core code: it imports jax, never flax.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Callable
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp

from jaxrnn._src.cells import accumulation_dtype
from jaxrnn._src.cells import matmul
from jaxrnn._src.config import _check_int
from jaxrnn._src.config import check_bool
from jaxrnn._src.init import torch_uniform
from jaxrnn._src.types import Array
from jaxrnn._src.types import LSTMState

Initializer = Callable[..., Array]

# Flax's defaults (flax.linen.linear.default_kernel_init and flax.linen.initializers are these very
# functions of jax.nn.initializers), created once so that two cells with default fields compare equal.
lecun_normal = jax.nn.initializers.lecun_normal()
orthogonal = jax.nn.initializers.orthogonal()
ones = jax.nn.initializers.ones
zeros = jax.nn.initializers.zeros


def _keyword(default: Any) -> Any:
  return dataclasses.field(default=default, kw_only=True)


def _check_callable(name: str, value) -> None:
  if not callable(value):
    raise TypeError(f'`{name}` must be callable, got {type(value).__name__} {value!r}.')


def _check_param_names(cell, params, names: Sequence[str]) -> None:
  """Names a ``params`` that is not the cell's tree, e.g. Flax's whole ``variables``."""
  if isinstance(params, Mapping) and set(names) <= set(params):
    return
  got = f'keys {sorted(params)}' if isinstance(params, Mapping) else type(params).__name__
  hint = (
    " (pass variables['params'], not the variables)"
    if isinstance(params, Mapping) and 'params' in params
    else ''
  )
  raise ValueError(
    f'`params` of {type(cell).__name__} must be a dict with keys {sorted(names)}, got {got}{hint}.'
  )


def _dense(x: Array, params: Mapping[str, Array]) -> Array:
  """Returns Flax's ``Dense``: ``x @ kernel + bias`` (``bias`` if present), accumulated in >= float32."""
  z = matmul(x, params['kernel'])
  bias = params.get('bias')
  return z if bias is None else z + bias.astype(z.dtype)


@dataclasses.dataclass(frozen=True)
class MGUCell:
  r"""Minimal gated unit, exactly ``flax.linen.MGUCell`` (Zhou et al. 2016).

  With ``reset_gate=True`` (Flax's default):

      f  = gate_fn(x W_if + b_if + h W_hf)
      n  = activation_fn(x W_in + b_in + f * (h W_hn + b_hn))
      h' = (1 - f) * n + f * h,   y = h'

  With ``reset_gate=False`` the candidate is
  ``n = activation_fn(x W_in + b_in + h W_hn)`` (and ``hn`` has no bias).

  Parameters are Flax's tree, unchanged: ``{'if': {'kernel': [F, H], 'bias':
  [H]}, 'hf': {'kernel': [H, H]}, 'hn': {'kernel': [H, H], 'bias': [H]}, 'in':
  {'kernel': [F, H], 'bias': [H]}}``, so ``nn.MGUCell(H).init(...)['params']``
  is this cell's ``params`` as it is. Carry ``h: [*batch, H]``; ``x:
  [*batch, F]``; ``y = h'``. Unlike Flax's ``carry_init``, the initial carry is
  zeros (``initial_carry`` takes no key); pass another one as ``initial_carry``.

  Attributes:
    features: ``H``, the hidden size (Flax's name); ``output_size`` is ``H``.
    reset_gate: apply ``f`` to the recurrent candidate term, as above.
    gate_fn: activation of ``f`` (``jax.nn.sigmoid``).
    activation_fn: activation of ``n`` (``jnp.tanh``).
    kernel_init: initializer of ``W_if`` and ``W_in`` (``lecun_normal()``).
    recurrent_kernel_init: initializer of ``W_hf`` and ``W_hn`` (``orthogonal()``).
    forget_bias_init: initializer of ``b_if`` (``ones``, as Flax: less
      forgetting at the start of training).
    activation_bias_init: initializer of ``b_in`` and ``b_hn`` (``zeros``).

  Examples:
    >>> import jax, jax.numpy as jnp, jaxrnn
    >>> cell = jaxrnn.MGUCell(4)
    >>> params = cell.init(jax.random.key(0), 3)
    >>> sorted(params), params['if']['kernel'].shape
    (['hf', 'hn', 'if', 'in'], (3, 4))
    >>> h, y = cell(params, cell.initial_carry((2,)), jnp.ones((2, 3)))
    >>> h.shape
    (2, 4)
  """

  features: int
  reset_gate: bool = _keyword(True)
  gate_fn: Callable[[Array], Array] = _keyword(jax.nn.sigmoid)
  activation_fn: Callable[[Array], Array] = _keyword(jnp.tanh)
  kernel_init: Initializer = _keyword(lecun_normal)
  recurrent_kernel_init: Initializer = _keyword(orthogonal)
  forget_bias_init: Initializer = _keyword(ones)
  activation_bias_init: Initializer = _keyword(zeros)
  feature_ndim = 1

  def __post_init__(self):
    _check_int('features', self.features, 1)
    check_bool('reset_gate', self.reset_gate)
    for name in (
      'gate_fn',
      'activation_fn',
      'kernel_init',
      'recurrent_kernel_init',
      'forget_bias_init',
      'activation_bias_init',
    ):
      _check_callable(name, getattr(self, name))

  @property
  def output_size(self) -> int:
    """``H``: the width of ``y`` and of the hidden state."""
    return self.features

  def init(self, key: Array, in_features: int, dtype=jnp.float32) -> dict:
    """Returns Flax's parameter tree for ``x: [..., F = in_features]`` (shapes in the class docstring)."""
    _check_int('in_features', in_features, 1)
    size = self.features
    keys = iter(jax.random.split(key, 7))
    recurrent_candidate = {'kernel': self.recurrent_kernel_init(next(keys), (size, size), dtype)}
    if self.reset_gate:
      recurrent_candidate['bias'] = self.activation_bias_init(next(keys), (size,), dtype)
    return {
      'if': {
        'kernel': self.kernel_init(next(keys), (in_features, size), dtype),
        'bias': self.forget_bias_init(next(keys), (size,), dtype),
      },
      'hf': {'kernel': self.recurrent_kernel_init(next(keys), (size, size), dtype)},
      'hn': recurrent_candidate,
      'in': {
        'kernel': self.kernel_init(next(keys), (in_features, size), dtype),
        'bias': self.activation_bias_init(next(keys), (size,), dtype),
      },
    }

  def initial_carry(self, batch_shape: Sequence[int], dtype=jnp.float32) -> Array:
    """Returns zeros ``h: [*batch, H]``."""
    return jnp.zeros((*batch_shape, self.features), dtype)

  def __call__(self, params: Mapping, carry: Array, x: Array) -> tuple[Array, Array]:
    """Returns ``(h', h')`` for ``carry h: [*batch, H]`` and ``x: [*batch, F]``."""
    h = carry
    _check_param_names(self, params, ('if', 'hf', 'hn', 'in'))
    _check_vector_step(params['if']['kernel'], self.features, h, x)
    forget = self.gate_fn(_dense(x, params['if']) + _dense(h, params['hf']))
    recurrent = _dense(h, params['hn'])
    if self.reset_gate:
      recurrent = forget * recurrent
    candidate = self.activation_fn(_dense(x, params['in']) + recurrent)
    new_h = ((1.0 - forget) * candidate + forget * h).astype(h.dtype)
    return new_h, new_h


def _check_vector_step(w_ih: Array, hidden_size: int, h: Array, x: Array) -> None:
  """Names a mismatched ``x`` or ``h`` before ``dot_general`` or broadcasting fails on it."""
  x_shape, h_shape = tuple(jnp.shape(x)), tuple(jnp.shape(h))
  if x_shape[-1:] != tuple(w_ih.shape[:1]):
    raise ValueError(
      f'`x` must have shape [..., F] with F = {w_ih.shape[0]} (the input kernel is '
      f'{list(w_ih.shape)}), got {x_shape}.'
    )
  if h_shape != x_shape[:-1] + (hidden_size,):
    raise ValueError(
      f'`carry` (h) must have shape {list(x_shape[:-1]) + [hidden_size]} (the batch shape of `x`, '
      f'then H), got {h_shape}.'
    )


_PADDING_NAMES = ('SAME', 'SAME_LOWER', 'VALID', 'CIRCULAR', 'REFLECT', 'CAUSAL')


@dataclasses.dataclass(frozen=True)
class ConvLSTMCell:
  r"""Convolutional LSTM, exactly ``flax.linen.ConvLSTMCell`` (Shi et al. 2015), over 1-D, 2-D or 3-D inputs.

  With ``*`` a convolution over the spatial axes (channels last) and the gate
  pre-activations split in Flax's order ``i, g, f, o``:

      i, g, f, o = split(W_ih * x + b_ih + W_hh * h + b_hh, 4)
      c' = sigmoid(f + 1) c + sigmoid(i) tanh(g)
      h' = sigmoid(o) tanh(c'),   y = h'

  (the ``+ 1`` on the forget gate is Flax's, in the equation rather than in
  the bias). Shapes, for ``S = spatial_shape`` (``len(kernel_size)`` axes) and
  ``C`` input channels: ``x: [*batch, *S, C]``, carry ``(c, h)``, each
  ``[*batch, *S, H]``, in Flax's order (a plain tuple, so a Flax carry is a
  jaxrnn carry as it is), ``y = h'``. ``feature_ndim = len(kernel_size) + 1``:
  a layer reads ``inputs: [*batch, T, *S, C]`` and layer ``k > 0`` reads
  ``[*S, D*H]``.

  Parameters are Flax's tree, unchanged: ``{'ih': {'kernel': [*kernel_size,
  C, 4H], 'bias': [4H]}, 'hh': {'kernel': [*kernel_size, H, 4H], 'bias':
  [4H]}}`` (no ``bias`` entries when ``use_bias=False``).

  The carry keeps the input's spatial shape, so both convolutions must keep
  it too: ``strides`` is accepted for Flax's signature but must be 1, and the
  padding must total ``k - 1`` on each axis (``'SAME'``, ``'CIRCULAR'``,
  ``'REFLECT'``, 1-D ``'CAUSAL'``, or explicit pairs such as ``(1, 1)`` for
  ``k = 3``; ``'VALID'`` only for ``k = 1``). Flax's own cell cannot run over a
  sequence with the others either: its new carry would not have the old one's shape.

  Attributes:
    features: ``H``, the number of filters of each gate (``output_size``).
    kernel_size: the kernel's spatial size, a tuple such as ``(3, 3)``.
    strides: ``None`` or all ones (see above).
    padding: ``'SAME'``, ``'SAME_LOWER'``, ``'CIRCULAR'``, ``'REFLECT'``,
      ``'CAUSAL'`` (1-D), ``'VALID'``, an int, or a sequence of an int or a
      ``(low, high)`` pair per spatial axis, as in Flax's ``nn.Conv``.
    use_bias: add ``b_ih`` and ``b_hh``.
    spatial_shape: ``S``, the spatial shape of the inputs and of the carry
      (keyword-only, required: ``initial_carry`` takes only the batch shape).
    kernel_init, recurrent_kernel_init, bias_init: initializers of ``W_ih``,
      ``W_hh`` and the biases; Flax's ``nn.Conv`` defaults, ``lecun_normal()``,
      ``lecun_normal()`` and ``zeros``.

  Examples:
    >>> import jax, jax.numpy as jnp, jaxrnn
    >>> cell = jaxrnn.ConvLSTMCell(4, (3, 3), spatial_shape=(5, 5))
    >>> params = cell.init(jax.random.key(0), (5, 5, 2))  # (*S, C)
    >>> params['ih']['kernel'].shape, params['hh']['kernel'].shape
    ((3, 3, 2, 16), (3, 3, 4, 16))
    >>> (c, h), y = cell(params, cell.initial_carry((7,)), jnp.ones((7, 5, 5, 2)))
    >>> c.shape, y.shape
    ((7, 5, 5, 4), (7, 5, 5, 4))
    >>> layer = jaxrnn.Recurrent(cell)
    >>> x = jnp.ones((7, 3, 5, 5, 2))  # B, T, *S, C
    >>> variables = layer.init(jax.random.key(0), x)
    >>> outputs, (c_n, h_n) = layer.apply(variables, x, jnp.array([3, 2, 2, 1, 1, 0, 0]))
    >>> outputs.shape, h_n.shape  # h_n: [L*D, B, *S, H]
    ((7, 3, 5, 5, 4), (1, 7, 5, 5, 4))
  """

  features: int
  kernel_size: Sequence[int]
  strides: int | Sequence[int] | None = None
  padding: str | int | Sequence[int | tuple[int, int]] = 'SAME'
  use_bias: bool = True
  spatial_shape: Sequence[int] = dataclasses.field(kw_only=True)
  kernel_init: Initializer = _keyword(lecun_normal)
  recurrent_kernel_init: Initializer = _keyword(lecun_normal)
  bias_init: Initializer = _keyword(zeros)

  def __post_init__(self):
    _check_int('features', self.features, 1)
    kernel_size = _int_tuple('kernel_size', self.kernel_size, 1, '(3, 3)')
    if not 1 <= len(kernel_size) <= 3:
      raise ValueError(f'`kernel_size` must have 1, 2 or 3 spatial axes, got {kernel_size}.')
    spatial_shape = _int_tuple('spatial_shape', self.spatial_shape, 1, '(32, 32)')
    if len(spatial_shape) != len(kernel_size):
      raise ValueError(
        f'`spatial_shape` {spatial_shape} must have one size per axis of `kernel_size` {kernel_size}.'
      )
    # Lists become tuples: the cell must stay hashable (the layers pass it to jax.jit as static).
    object.__setattr__(self, 'kernel_size', kernel_size)
    object.__setattr__(self, 'spatial_shape', spatial_shape)
    if self.strides is not None:
      strides = (self.strides,) * len(kernel_size) if isinstance(self.strides, int) else self.strides
      strides = _int_tuple('strides', strides, 1, '(1, 1)')
      if strides != (1,) * len(kernel_size):
        raise ValueError(
          f'`strides` must be 1 (or None): the carry keeps the spatial shape of the inputs, and a '
          f'strided convolution would shrink it, got strides={self.strides!r}.'
        )
      object.__setattr__(self, 'strides', strides)
    if isinstance(self.padding, Sequence) and not isinstance(self.padding, str):
      object.__setattr__(
        self, 'padding', tuple(tuple(p) if isinstance(p, Sequence) else p for p in self.padding)
      )
    self._explicit_padding()  # validates `padding`
    check_bool('use_bias', self.use_bias)
    for name in ('kernel_init', 'recurrent_kernel_init', 'bias_init'):
      _check_callable(name, getattr(self, name))

  @property
  def feature_ndim(self) -> int:
    """The trailing feature axes of ``x``: ``len(kernel_size)`` spatial axes and the channels."""
    return len(self.kernel_size) + 1

  @property
  def output_size(self) -> int:
    """``H``: the channels of ``y`` and of the carry."""
    return self.features

  def _explicit_padding(self) -> tuple[tuple[tuple[int, int], ...], str]:
    """Returns ``(pads, mode)``: a ``(low, high)`` pair per spatial axis and ``jnp.pad``'s mode."""
    padding, kernel_size = self.padding, self.kernel_size
    mode = 'constant'
    if isinstance(padding, str):
      name = padding.upper()
      if name not in _PADDING_NAMES:
        raise ValueError(
          f'`padding` must be one of {list(_PADDING_NAMES)}, an int or pairs, got {padding!r}.'
        )
      if name == 'CAUSAL' and len(kernel_size) != 1:
        raise ValueError(f"`padding='CAUSAL'` is only for 1-D inputs, got kernel_size={kernel_size}.")
      mode = {'CIRCULAR': 'wrap', 'REFLECT': 'reflect'}.get(name, 'constant')
      pads = tuple(
        {
          'VALID': (0, 0),
          'CAUSAL': (k - 1, 0),
          'SAME_LOWER': (k // 2, (k - 1) // 2),
        }.get(name, ((k - 1) // 2, k // 2))  # SAME, CIRCULAR, REFLECT
        for k in kernel_size
      )
    elif isinstance(padding, numbers.Integral) and not isinstance(padding, bool):
      pads = ((int(padding), int(padding)),) * len(kernel_size)
    elif isinstance(padding, tuple) and len(padding) == len(kernel_size):
      pads = tuple(_padding_pair(p) for p in padding)
    else:
      raise ValueError(
        f'`padding` must be a string, an int, or one int or (low, high) pair per spatial axis of '
        f'kernel_size={kernel_size}, got {padding!r}.'
      )
    for (low, high), k in zip(pads, kernel_size, strict=True):
      if low < 0 or high < 0 or low + high != k - 1:
        raise ValueError(
          f'`padding={padding!r}` pads ({low}, {high}) on an axis with kernel size {k}: the carry keeps '
          f'the spatial shape of the inputs, so each axis must be padded by k - 1 = {k - 1} in all.'
        )
    return pads, mode

  def init(self, key: Array, in_features: Sequence[int], dtype=jnp.float32) -> dict:
    """Returns Flax's parameter tree for ``x: [..., *S, C]``, ``in_features = (*S, C)``."""
    in_features = _int_tuple('in_features', in_features, 1, (*self.spatial_shape, 3))
    if in_features[:-1] != self.spatial_shape or len(in_features) != self.feature_ndim:
      raise ValueError(
        f'`in_features` must be (*spatial_shape, C) = ({", ".join(map(str, self.spatial_shape))}, C), '
        f'got {in_features}: this cell was built for inputs of spatial shape {self.spatial_shape}.'
      )
    gates = 4 * self.features
    keys = jax.random.split(key, 4)
    params = {
      'ih': {'kernel': self.kernel_init(keys[0], (*self.kernel_size, in_features[-1], gates), dtype)},
      'hh': {'kernel': self.recurrent_kernel_init(keys[1], (*self.kernel_size, self.features, gates), dtype)},
    }
    if self.use_bias:
      params['ih']['bias'] = self.bias_init(keys[2], (gates,), dtype)
      params['hh']['bias'] = self.bias_init(keys[3], (gates,), dtype)
    return params

  def initial_carry(self, batch_shape: Sequence[int], dtype=jnp.float32) -> tuple[Array, Array]:
    """Returns zeros ``(c, h)``, each ``[*batch, *S, H]``."""
    shape = (*batch_shape, *self.spatial_shape, self.features)
    return jnp.zeros(shape, dtype), jnp.zeros(shape, dtype)

  def hidden_leaves(self, carry: tuple[Array, Array]) -> tuple[bool, bool]:
    """Hook: recurrent dropout masks ``h`` (the input of the recurrent convolution), not ``c``."""
    return False, True

  def widen_carry(self, carry: tuple[Array, Array]) -> tuple[Array, Array]:
    """Hook: the cell state ``c`` accumulates in (at least) float32, also for bfloat16 compute."""
    c, h = carry
    return c.astype(accumulation_dtype(c.dtype)), h

  def __call__(
    self, params: Mapping, carry: tuple[Array, Array], x: Array
  ) -> tuple[tuple[Array, Array], Array]:
    """Returns ``((c', h'), h')`` for ``carry (c, h)``, each ``[*batch, *S, H]``, and ``x: [*batch, *S, C]``."""
    c, h = carry
    _check_param_names(self, params, ('ih', 'hh'))
    self._check_step(params, c, h, x)
    ndim = self.feature_ndim
    batch_shape = x.shape[: x.ndim - ndim]
    flat = lambda a: a.reshape(math.prod(batch_shape), *a.shape[a.ndim - ndim :])  # noqa: E731
    pads, mode = self._explicit_padding()
    gates = _conv(flat(x), params['ih'], pads, mode) + _conv(flat(h), params['hh'], pads, mode)
    gates = gates.reshape(*batch_shape, *gates.shape[1:])
    i, g, f, o = jnp.split(gates, 4, axis=-1)
    new_c = jax.nn.sigmoid(f + 1) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
    new_h = (jax.nn.sigmoid(o) * jnp.tanh(new_c)).astype(h.dtype)
    return (new_c.astype(c.dtype), new_h), new_h

  def _check_step(self, params: Mapping, c: Array, h: Array, x: Array) -> None:
    """Names a mismatched ``x`` or carry before the convolution or broadcasting fails on it."""
    ndim = self.feature_ndim
    x_shape = tuple(jnp.shape(x))
    channels = params['ih']['kernel'].shape[-2]
    expected = (*self.spatial_shape, channels)
    if len(x_shape) < ndim or x_shape[len(x_shape) - ndim :] != expected:
      raise ValueError(
        f'`x` must have shape [*batch, *spatial_shape, C] = [*batch, {", ".join(map(str, expected))}] '
        f'(C from the input kernel {list(params["ih"]["kernel"].shape)}), got {x_shape}.'
      )
    want = (*x_shape[: len(x_shape) - ndim], *self.spatial_shape, self.features)
    for name, leaf in (('c', c), ('h', h)):
      if tuple(jnp.shape(leaf)) != want:
        raise ValueError(
          f'`carry` ({name}) must have shape {list(want)} (the batch shape of `x`, then *spatial_shape '
          f'and H), got {tuple(jnp.shape(leaf))}.'
        )


def _int_tuple(name: str, value, minimum: int, example) -> tuple[int, ...]:
  """Returns ``value`` as a tuple of ints ``>= minimum``, or raises naming ``name``."""
  if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
    raise TypeError(
      f'`{name}` must be a tuple of ints such as {example}, got {type(value).__name__} {value!r}.'
    )
  for item in value:
    _check_int(f'{name}[...]', item, minimum)
  return tuple(int(item) for item in value)


def _padding_pair(p) -> tuple[int, int]:
  if isinstance(p, numbers.Integral) and not isinstance(p, bool):
    return int(p), int(p)
  if isinstance(p, tuple) and len(p) == 2 and all(isinstance(q, numbers.Integral) for q in p):
    return int(p[0]), int(p[1])
  raise ValueError(f'each entry of `padding` must be an int or a (low, high) pair of ints, got {p!r}.')


def _conv(x: Array, params: Mapping[str, Array], pads, mode: str) -> Array:
  """Returns Flax's ``nn.Conv`` with stride 1: ``x: [N, *S, C_in]`` -> ``[N, *S, C_out]``, in >= float32."""
  kernel = params['kernel']
  ndim = x.ndim
  if mode != 'constant':  # Flax pads circularly or by reflection first, then convolves with VALID
    x = jnp.pad(x, ((0, 0), *pads, (0, 0)), mode=mode)
    pads = ((0, 0),) * (ndim - 2)
  spatial = tuple(range(1, ndim - 1))
  # Channels last, as Flax: x [N, *S, C], kernel [*k, C_in, C_out].
  numbers_ = jax.lax.ConvDimensionNumbers(
    lhs_spec=(0, ndim - 1, *spatial),
    rhs_spec=(ndim - 1, ndim - 2, *range(ndim - 2)),
    out_spec=(0, ndim - 1, *spatial),
  )
  z = jax.lax.conv_general_dilated(
    x,
    kernel,
    window_strides=(1,) * (ndim - 2),
    padding=pads,
    dimension_numbers=numbers_,
    preferred_element_type=accumulation_dtype(x.dtype),
  )
  bias = params.get('bias')
  return z if bias is None else z + bias.astype(z.dtype)


def _layer_norm(v: Array, scale: Array, bias: Array | None, epsilon: float) -> Array:
  """Returns ``scale * (v - mean) / sqrt(var + epsilon) + bias`` over the last axis (biased variance)."""
  mean = jnp.mean(v, axis=-1, keepdims=True)
  centred = v - mean
  variance = jnp.mean(jnp.square(centred), axis=-1, keepdims=True)
  out = centred * jax.lax.rsqrt(variance + epsilon) * scale.astype(v.dtype)
  return out if bias is None else out + bias.astype(v.dtype)


@dataclasses.dataclass(frozen=True)
class LayerNormLSTMCell:
  r"""LSTM with layer normalisation, the variant of Ba, Kiros and Hinton (2016), "Layer Normalization".

  The two matmuls are normalised separately, before they are summed, and the
  cell state is normalised before the output ``tanh``; the carried ``c'`` is
  the un-normalised one. Gates in PyTorch's order ``i, f, g, o``:

      i, f, g, o = split(LN(x W_ih; a_ih) + LN(h W_hh; a_hh) + b, 4)
      c' = sigmoid(f) c + sigmoid(i) tanh(g)
      h' = sigmoid(o) tanh(LN(c'; a_c, b_c)),   y = h'

  where ``LN(v; a, b) = a (v - mean(v)) / sqrt(var(v) + epsilon) + b``, mean
  and (biased) variance over the last axis (``4H`` for the gates, ``H`` for
  ``c'``). The paper's shifts of the two gate normalisations add to ``b``, so
  they are that one bias.

  Parameters ``{'w_ih': [F, 4H], 'w_hh': [H, 4H], 'ln_ih_scale': [4H],
  'ln_hh_scale': [4H], 'ln_c_scale': [H], 'bias': [4H], 'ln_c_bias': [H]}``
  (``a_ih``, ``a_hh``, ``a_c``, ``b``, ``b_c``; the last two only with
  ``use_bias``). Carry [`LSTMState`][jaxrnn.LSTMState] ``(h: [*batch, H], c:
  [*batch, H])``, as jaxrnn's LSTM; ``x: [*batch, F]``.

  Attributes:
    hidden_size: ``H``.
    use_bias: add ``b`` and ``b_c``.
    epsilon: added to the variance in ``LN`` (``1e-5``, as ``torch.nn.LayerNorm``).
    kernel_init, recurrent_kernel_init, bias_init: initializers of ``w_ih``,
      ``w_hh`` and ``bias``; ``None`` is PyTorch's ``U(-1/sqrt(H),
      1/sqrt(H))``, as for [`LSTMCell`][jaxrnn.LSTMCell]. The scales start
      at one and ``ln_c_bias`` at zero.

  Examples:
    >>> import jax, jax.numpy as jnp, jaxrnn
    >>> cell = jaxrnn.LayerNormLSTMCell(8)
    >>> params = cell.init(jax.random.key(0), 3)
    >>> (h, c), y = cell(params, cell.initial_carry((5,)), jnp.ones((5, 3)))
    >>> h.shape, c.shape
    ((5, 8), (5, 8))
    >>> layer = jaxrnn.Recurrent(cell, bidirectional=True)
    >>> x = jnp.ones((5, 4, 3))  # B, T, F
    >>> outputs, (h_n, c_n) = layer.apply(layer.init(jax.random.key(1), x), x)
    >>> outputs.shape, c_n.shape  # c_n: [L*D, B, H]
    ((5, 4, 16), (2, 5, 8))
  """

  hidden_size: int
  use_bias: bool = True
  epsilon: float = 1e-5
  kernel_init: Initializer | None = _keyword(None)
  recurrent_kernel_init: Initializer | None = _keyword(None)
  bias_init: Initializer | None = _keyword(None)
  feature_ndim = 1

  def __post_init__(self):
    _check_int('hidden_size', self.hidden_size, 1)
    check_bool('use_bias', self.use_bias)
    epsilon = self.epsilon
    if isinstance(epsilon, bool) or not isinstance(epsilon, numbers.Real) or not epsilon > 0:
      raise ValueError(f'`epsilon` must be a positive float, got {epsilon!r}.')
    for name in ('kernel_init', 'recurrent_kernel_init', 'bias_init'):
      if getattr(self, name) is not None:
        _check_callable(name, getattr(self, name))

  @property
  def output_size(self) -> int:
    """``H``: the width of ``y`` and of the hidden state."""
    return self.hidden_size

  def init(self, key: Array, in_features: int, dtype=jnp.float32) -> dict[str, Array]:
    """Returns the parameters for ``x: [..., F = in_features]`` (names and shapes in the class docstring)."""
    _check_int('in_features', in_features, 1)
    size, gates = self.hidden_size, 4 * self.hidden_size
    default = torch_uniform(size)
    keys = jax.random.split(key, 3)
    params = {
      'w_ih': (self.kernel_init or default)(keys[0], (in_features, gates), dtype),
      'w_hh': (self.recurrent_kernel_init or default)(keys[1], (size, gates), dtype),
      'ln_ih_scale': jnp.ones((gates,), dtype),
      'ln_hh_scale': jnp.ones((gates,), dtype),
      'ln_c_scale': jnp.ones((size,), dtype),
    }
    if self.use_bias:
      params['bias'] = (self.bias_init or default)(keys[2], (gates,), dtype)
      params['ln_c_bias'] = jnp.zeros((size,), dtype)
    return params

  def initial_carry(self, batch_shape: Sequence[int], dtype=jnp.float32) -> LSTMState:
    """Returns zeros ``LSTMState(h: [*batch, H], c: [*batch, H])``."""
    shape = (*batch_shape, self.hidden_size)
    return LSTMState(jnp.zeros(shape, dtype), jnp.zeros(shape, dtype))

  def hidden_leaves(self, carry: LSTMState) -> LSTMState:
    """Hook: recurrent dropout masks ``h`` (the input of the recurrent matmul), not ``c``."""
    return LSTMState(True, False)

  def widen_carry(self, carry: LSTMState) -> LSTMState:
    """Hook: the cell state ``c`` accumulates in (at least) float32, also for bfloat16 compute."""
    return LSTMState(carry.h, carry.c.astype(accumulation_dtype(carry.c.dtype)))

  def __call__(self, params: Mapping[str, Array], carry: LSTMState, x: Array) -> tuple[LSTMState, Array]:
    """Returns ``(LSTMState(h', c'), h')`` for ``x: [*batch, F]``."""
    h, c = carry
    _check_param_names(self, params, ('w_ih', 'w_hh', 'ln_ih_scale', 'ln_hh_scale', 'ln_c_scale'))
    _check_vector_step(params['w_ih'], self.hidden_size, h, x)
    if tuple(jnp.shape(c)) != tuple(jnp.shape(h)):
      raise ValueError(
        f'`carry.c` must have the shape of `carry.h`, {tuple(jnp.shape(h))}, got {tuple(jnp.shape(c))}.'
      )
    eps = self.epsilon
    z = _layer_norm(matmul(x, params['w_ih']), params['ln_ih_scale'], None, eps)
    z = z + _layer_norm(matmul(h, params['w_hh']), params['ln_hh_scale'], None, eps)
    if 'bias' in params:
      z = z + params['bias'].astype(z.dtype)
    i, f, g, o = jnp.split(z, 4, axis=-1)
    new_c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
    normed_c = _layer_norm(new_c, params['ln_c_scale'], params.get('ln_c_bias'), eps)
    new_h = (jax.nn.sigmoid(o) * jnp.tanh(normed_c)).astype(h.dtype)
    return LSTMState(new_h, new_c.astype(c.dtype)), new_h
