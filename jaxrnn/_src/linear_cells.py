r"""Cells whose recurrence is linear in the carry (SPEC §12): ``MinGRUCell``, ``MinLSTMCell``, ``LRUCell``, ``RGLRUCell``.

Each step is ``h_t = a_t * h_{t-1} + b_t`` (elementwise, a diagonal
recurrence) with ``a_t`` and ``b_t`` computed from ``x_t`` alone, so a whole
sequence is a prefix product that ``jax.lax.associative_scan`` computes in
depth ``log T``. Every cell here is an open-protocol cell (SPEC §10), which the
sequential driver of [`Recurrent`][jaxrnn.Recurrent] runs as it is, and has
the hooks a parallel driver needs:

- ``linear_form(params, x) -> (a, b)``: ``x: [*batch, F]`` gives ``a, b:
  [*batch, N]`` in the dtype the carry accumulates in (``widen_carry``:
  float32 for bfloat16 compute; complex for ``LRUCell``);
- ``readout(params, h, x) -> y``: the output from the new state and the input;
- ``__call__(params, h, x)`` is ``(a * h + b, readout(params, a * h + b, x))``;
- ``MinGRUCell`` and ``MinLSTMCell`` with ``log_space=True`` also have
  ``log_linear_form(params, x) -> (log_a, log_b)``, with
  ``log h_t = logaddexp(log_a + log h_{t-1}, log_b)`` (their states are positive).

The carry is one array ``h: [*batch, N]``. Matmuls accumulate in at least
float32 and ``a``, ``b`` stay there. This file is core code: it imports jax, never flax.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Callable
from collections.abc import Mapping
from collections.abc import Sequence
from typing import ClassVar

import jax
import jax.numpy as jnp

from jaxrnn._src.cells import accumulation_dtype
from jaxrnn._src.cells import matmul
from jaxrnn._src.config import _check_int
from jaxrnn._src.config import check_bool
from jaxrnn._src.flax_style_cells import _check_param_names
from jaxrnn._src.init import torch_uniform
from jaxrnn._src.types import Array

Initializer = Callable[..., Array]


def _keyword(default):
  return dataclasses.field(default=default, kw_only=True)


def _check_real(name: str, value, low: float, high: float, low_open=False, high_open=False) -> None:
  """Raises unless ``value`` is a real number in the interval ``[low, high]`` (ends open as told)."""
  if isinstance(value, bool) or not isinstance(value, numbers.Real):
    raise TypeError(f'`{name}` must be a float, got {type(value).__name__} {value!r}.')
  above = value > low if low_open else value >= low
  below = value < high if high_open else value <= high
  if not (above and below):
    interval = f'{"(" if low_open else "["}{low}, {high}{")" if high_open else "]"}'
    raise ValueError(f'`{name}` must be in {interval}, got {value!r}.')


def _check_initializer(name: str, value) -> None:
  if value is not None and not callable(value):
    raise TypeError(f'`{name}` must be None or callable (key, shape, dtype), got {type(value).__name__}.')


def _check_step(cell, in_width: int, h: Array, x: Array) -> None:
  """Names a mismatched ``x`` or carry before a matmul or broadcasting fails on it."""
  x_shape, h_shape = tuple(jnp.shape(x)), tuple(jnp.shape(h))
  if len(x_shape) < 1 or x_shape[-1] != in_width:
    raise ValueError(
      f'`x` of {type(cell).__name__} must have shape [*batch, F] with F = {in_width} (from the '
      f'parameters), got {x_shape}.'
    )
  want = x_shape[:-1] + (cell.state_size,)
  if h_shape != want:
    raise ValueError(
      f'`carry` (h) of {type(cell).__name__} must have shape {list(want)} (the batch shape of `x`, then '
      f'N = {cell.state_size}), got {h_shape}.'
    )


def _positive_candidate(v: Array) -> Array:
  """Returns the papers' ``g(v) = v + 0.5 if v >= 0 else sigmoid(v)``: positive, continuous at 0."""
  return jnp.where(v >= 0, v + 0.5, jax.nn.sigmoid(v))


def _log_positive_candidate(v: Array) -> Array:
  """Returns ``log g(v)`` without forming ``g``: ``log(v + 0.5)`` or ``-softplus(-v)``."""
  return jnp.where(v >= 0, jnp.log(jnp.maximum(v, 0) + 0.5), -jax.nn.softplus(-v))


def _widen(h: Array) -> Array:
  return h.astype(accumulation_dtype(h.dtype))


@dataclasses.dataclass(frozen=True)
class _GatedLinearCell:
  """What ``MinGRUCell`` and ``MinLSTMCell`` share: their fields, fused dense gates, ``y = h``, ``log_space``."""

  features: int
  log_space: bool = _keyword(False)
  use_bias: bool = _keyword(True)
  kernel_init: Initializer | None = _keyword(None)
  bias_init: Initializer | None = _keyword(None)
  feature_ndim = 1
  num_gates: ClassVar[int]

  def __post_init__(self) -> None:
    _check_int('features', self.features, 1)
    check_bool('log_space', self.log_space)
    check_bool('use_bias', self.use_bias)
    _check_initializer('kernel_init', self.kernel_init)
    _check_initializer('bias_init', self.bias_init)

  @property
  def output_size(self) -> int:
    """``H``: the width of ``y`` and of the state."""
    return self.features

  @property
  def state_size(self) -> int:
    """``N = H``: the width of the carry."""
    return self.features

  def init(self, key: Array, in_features: int, dtype=jnp.float32) -> dict[str, Array]:
    """Returns ``{'w_ih': [F, G*H], 'b_ih': [G*H]}`` for ``x: [..., F = in_features]`` (``b_ih`` with ``use_bias``)."""
    _check_int('in_features', in_features, 1)
    default = torch_uniform(in_features)  # torch.nn.Linear's U(-1/sqrt(F), 1/sqrt(F))
    width = self.num_gates * self.features
    keys = jax.random.split(key, 2)
    params = {'w_ih': (self.kernel_init or default)(keys[0], (in_features, width), dtype)}
    if self.use_bias:
      params['b_ih'] = (self.bias_init or default)(keys[1], (width,), dtype)
    return params

  def initial_carry(self, batch_shape: Sequence[int], dtype=jnp.float32) -> Array:
    """Returns zeros ``h: [*batch, H]``."""
    return jnp.zeros((*batch_shape, self.features), dtype)

  def widen_carry(self, carry: Array) -> Array:
    """Hook: the state accumulates in (at least) float32, also for bfloat16 compute."""
    return _widen(carry)

  def _gates(self, params: Mapping[str, Array], x: Array) -> list[Array]:
    """Returns the ``G`` pre-activations, each ``[*batch, H]``, in >= float32."""
    _check_param_names(self, params, ('w_ih',))
    w_ih = params['w_ih']
    if tuple(jnp.shape(x))[-1:] != tuple(w_ih.shape[:1]):
      raise ValueError(
        f'`x` of {type(self).__name__} must have shape [*batch, F] with F = {w_ih.shape[0]} (the input '
        f'kernel is {list(w_ih.shape)}), got {tuple(jnp.shape(x))}.'
      )
    z = matmul(x, w_ih)
    if 'b_ih' in params:
      z = z + params['b_ih'].astype(z.dtype)
    return jnp.split(z, self.num_gates, axis=-1)

  def _candidate(self, v: Array) -> Array:
    return _positive_candidate(v) if self.log_space else v

  def linear_form(self, params: Mapping[str, Array], x: Array) -> tuple[Array, Array]:
    """Returns ``(a, b) = (1 - w, w * h~)``, each ``[*batch, H]`` in >= float32, for ``x: [*batch, F]``,
    with the new state's weight ``w = sigmoid(k)``: ``z`` for minGRU, ``i'`` for minLSTM."""
    k, v = self._mixing(params, x)
    return jax.nn.sigmoid(-k), jax.nn.sigmoid(k) * self._candidate(v)

  def log_linear_form(self, params: Mapping[str, Array], x: Array) -> tuple[Array, Array]:
    """Returns ``(log a, log b) = (log(1 - w), log w + log g(v))``, each ``[*batch, H]`` (``log_space`` only)."""
    if not self.log_space:
      raise ValueError(
        '`log_linear_form` needs `log_space=True`: with the plain linear candidate, b = w * h~ can be '
        'negative and has no logarithm.'
      )
    k, v = self._mixing(params, x)
    return -jax.nn.softplus(k), -jax.nn.softplus(-k) + _log_positive_candidate(v)

  def readout(self, params: Mapping[str, Array], h: Array, x: Array) -> Array:
    """Returns ``y = h`` in the compute dtype (``x``'s): ``[*batch, H]``."""
    del params
    return h.astype(x.dtype)

  def __call__(self, params: Mapping[str, Array], carry: Array, x: Array) -> tuple[Array, Array]:
    """Returns ``(h', h')`` with ``h' = a * h + b`` from ``linear_form``; ``carry h: [*batch, H]``, ``x: [*batch, F]``."""
    h = carry
    _check_param_names(self, params, ('w_ih',))
    _check_step(self, params['w_ih'].shape[0], h, x)
    a, b = self.linear_form(params, x)
    new_h = (a * h.astype(a.dtype) + b).astype(h.dtype)
    return new_h, self.readout(params, new_h, x)


@dataclasses.dataclass(frozen=True)
class MinGRUCell(_GatedLinearCell):
  r"""minGRU of Feng et al. (2024), "Were RNNs All We Needed?" (arXiv:2410.01201).

  The gate and the candidate read ``x_t`` only, so the recurrence is linear in ``h``:

      z_t  = sigmoid(x_t W_z + b_z)
      h~_t = x_t W_h + b_h                  (log_space=False, the paper's default)
      h~_t = g(x_t W_h + b_h)               (log_space=True)
      h_t  = (1 - z_t) * h_{t-1} + z_t * h~_t,   y_t = h_t

  with ``g(v) = v + 0.5`` for ``v >= 0`` and ``sigmoid(v)`` otherwise, the
  paper's positive candidate for its log-space formulation: then
  ``log h_t = logaddexp(log(1 - z_t) + log h_{t-1}, log z_t + log h~_t)``,
  computed by ``log_linear_form`` with ``log(1 - z) = -softplus(k)`` and
  ``log z = -softplus(-k)`` for ``k = x W_z + b_z``. ``__call__`` and
  ``linear_form`` compute the same recurrence in linear space; the state stays
  positive in log space when the initial carry is ``>= 0`` (zeros by default).

  Linear form: ``a = 1 - z = sigmoid(-k)``, ``b = z * h~``.

  Parameters ``{'w_ih': [F, 2H], 'b_ih': [2H]}``, gates side by side in the
  order ``z, h~`` (jaxrnn's fused layout: ``W_z = w_ih[:, :H]``); ``b_ih`` only
  with ``use_bias``. Carry ``h: [*batch, H]``; ``x: [*batch, F]``; ``y = h``.

  Attributes:
    features: ``H``, the state and output width.
    log_space: use the positive candidate ``g`` and provide ``log_linear_form``.
    use_bias: add ``b_z`` and ``b_h`` (the paper's ``Linear`` has a bias).
    kernel_init, bias_init: initializers of ``w_ih`` and ``b_ih``; ``None`` is
      ``torch.nn.Linear``'s ``U(-1/sqrt(F), 1/sqrt(F))``, as the paper's code.

  Examples:
    >>> import jax, jax.numpy as jnp, jaxrnn
    >>> cell = jaxrnn.MinGRUCell(4)
    >>> params = cell.init(jax.random.key(0), 3)
    >>> params['w_ih'].shape, params['b_ih'].shape
    ((3, 8), (8,))
    >>> x = jnp.ones((2, 3))
    >>> h, y = cell(params, cell.initial_carry((2,)), x)
    >>> a, b = cell.linear_form(params, x)  # h = a * h_prev + b
    >>> bool(jnp.allclose(h, b)), a.shape
    (True, (2, 4))
    >>> layer = jaxrnn.Recurrent(jaxrnn.MinGRUCell(4, log_space=True), bidirectional=True)
    >>> xs = jnp.ones((2, 5, 3))  # B, T, F
    >>> outputs, h_n = layer.apply(layer.init(jax.random.key(1), xs), xs, jnp.array([5, 2]))
    >>> outputs.shape, h_n.shape
    ((2, 5, 8), (2, 2, 4))
  """

  num_gates = 2

  def _mixing(self, params: Mapping[str, Array], x: Array) -> tuple[Array, Array]:
    """Returns the update gate's logit ``k`` (``z = sigmoid(k)``) and the candidate's pre-activation."""
    return tuple(self._gates(params, x))


@dataclasses.dataclass(frozen=True)
class MinLSTMCell(_GatedLinearCell):
  r"""minLSTM of Feng et al. (2024), "Were RNNs All We Needed?" (arXiv:2410.01201).

  Gates and candidate read ``x_t`` only; the gates are normalised so that the
  state's scale does not depend on time (the paper's length independence):

      f_t  = sigmoid(x_t W_f + b_f),   i_t = sigmoid(x_t W_i + b_i)
      f'_t = f_t / (f_t + i_t),        i'_t = i_t / (f_t + i_t)
      h~_t = x_t W_h + b_h             (log_space=False)
      h~_t = g(x_t W_h + b_h)          (log_space=True)
      h_t  = f'_t * h_{t-1} + i'_t * h~_t,   y_t = h_t

  with the paper's positive ``g`` of [`MinGRUCell`][jaxrnn.MinGRUCell]. The
  normalised gates are computed as ``f' = sigmoid(-d)`` and ``i' = sigmoid(d)``
  with ``d = softplus(-k_f) - softplus(-k_i) = log i - log f`` (exact, and
  stable where both gates underflow); in log space ``log f' = -softplus(d)``,
  ``log i' = -softplus(-d)``, as in the paper's code.

  Linear form: ``a = f'``, ``b = i' * h~``.

  Parameters ``{'w_ih': [F, 3H], 'b_ih': [3H]}``, gates in the order ``f, i,
  h~``; ``b_ih`` only with ``use_bias``. Carry ``h: [*batch, H]``; ``x:
  [*batch, F]``; ``y = h``.

  Attributes:
    features: ``H``, the state and output width.
    log_space: use the positive candidate ``g`` and provide ``log_linear_form``.
    use_bias: add ``b_f``, ``b_i`` and ``b_h``.
    kernel_init, bias_init: initializers of ``w_ih`` and ``b_ih``; ``None`` is
      ``torch.nn.Linear``'s ``U(-1/sqrt(F), 1/sqrt(F))``.

  Examples:
    >>> import jax, jax.numpy as jnp, jaxrnn
    >>> cell = jaxrnn.MinLSTMCell(4, log_space=True)
    >>> params = cell.init(jax.random.key(0), 3)
    >>> log_a, log_b = cell.log_linear_form(params, jnp.ones((2, 3)))
    >>> a, b = cell.linear_form(params, jnp.ones((2, 3)))
    >>> bool(jnp.allclose(jnp.exp(log_a), a) and jnp.allclose(jnp.exp(log_b), b))
    True
  """

  num_gates = 3

  def _mixing(self, params: Mapping[str, Array], x: Array) -> tuple[Array, Array]:
    """Returns ``d = log i - log f`` (``i' = sigmoid(d)``) and the candidate's pre-activation ``v``."""
    k_f, k_i, v = self._gates(params, x)
    return jax.nn.softplus(-k_f) - jax.nn.softplus(-k_i), v


def _complex_dtype(dtype) -> jnp.dtype:
  """Returns the complex dtype of a state computed in ``dtype``: complex64, complex128 for float64."""
  return jnp.result_type(accumulation_dtype(dtype), jnp.complex64)


@dataclasses.dataclass(frozen=True)
class LRUCell:
  r"""Linear Recurrent Unit of Orvieto et al. (2023), "Resurrecting Recurrent Neural Networks for
  Long Sequences" (arXiv:2303.06349).

  A complex diagonal recurrence with an exponential parametrisation, the
  paper's equations and its reference code's parameters:

      lambda = exp(-exp(nu_log) + i exp(theta_log))          [N], |lambda| < 1
      gamma  = exp(gamma_log)                                [N]
      h_t = lambda * h_{t-1} + gamma * (x_t B),   B = B_re + i B_im
      y_t = Re(h_t C) + D * x_t,                  C = C_re + i C_im    (F = H, the paper)
      y_t = Re(h_t C) + x_t D                                          (F != H)

  Initialisation (the paper's Lemma 3.2, "ring initialisation"): ``|lambda|``
  uniform in area on the ring ``r_min <= |lambda| <= r_max``,
  ``nu_log = log(-0.5 log(u1 (r_max^2 - r_min^2) + r_min^2))``, phase
  ``theta = max_phase * u2`` (``theta_log = log theta``), and
  ``gamma_log = log sqrt(1 - |lambda|^2)`` (trained afterwards, as in the
  paper). ``B_re, B_im ~ N(0, 1/(2F))`` (Glorot, halved for the real part
  taken by the readout), ``C_re, C_im ~ N(0, 1/N)``, ``D ~ N(0, 1)``
  (``N(0, 1/F)`` for the matrix ``D``).
  ``u1, u2`` are drawn from ``[tiny, 1)``: a draw of exactly 0 would make a
  parameter infinite (and its gradient NaN).

  In the paper the input width ``F`` equals the model width ``H`` and the
  skip ``D`` multiplies ``x`` elementwise; that is this cell's parameter tree
  when ``in_features == features``. Any other input width (the layers of a
  stack after the first read ``num_directions * features``, e.g. ``2H`` in a
  bidirectional stack) gets the minimal generalisation: ``B`` is ``[F, N]``
  anyway, and the skip becomes a dense matrix ``D: [F, H]``, initialised
  ``N(0, 1/F)`` so that ``x D`` has the variance of the diagonal case.

  Parameters (jaxrnn's ``x @ W`` layout: ``B`` and ``C`` are the transposes
  of the reference code's): ``{'nu_log': [N], 'theta_log': [N], 'gamma_log':
  [N], 'B_re': [F, N], 'B_im': [F, N], 'C_re': [N, H], 'C_im': [N, H], 'D':
  [H]}`` (``D: [F, H]`` when ``F != H``). Carry ``h: [*batch, N]``, complex
  (complex64, or complex128 for a float64 layer; bfloat16 compute keeps
  complex64); ``x: [*batch, F]``; ``y: [*batch, H]``, real, in ``x``'s dtype.

  Linear form: ``a = lambda`` (broadcast to ``[*batch, N]``), ``b = gamma * (x B)``.

  Attributes:
    features: ``H``, the output width (the paper's model width, also its input width).
    state_size: ``N``, the complex state width; ``None`` for ``features``.
    r_min, r_max: radii of the ring of ``|lambda|`` at initialisation,
      ``0 <= r_min < r_max <= 1``.
    max_phase: largest phase of ``lambda`` at initialisation, ``2 pi``
      (the reference code writes 6.28; the paper uses ``pi / 10`` on some tasks).

  Examples:
    >>> import jax, jax.numpy as jnp, jaxrnn
    >>> cell = jaxrnn.LRUCell(4, state_size=8, r_min=0.9, r_max=0.999)
    >>> params = cell.init(jax.random.key(0), 4)
    >>> params['B_re'].shape, params['C_re'].shape
    ((4, 8), (8, 4))
    >>> h, y = cell(params, cell.initial_carry((2,)), jnp.ones((2, 4)))
    >>> h.dtype, h.shape, y.dtype, y.shape
    (dtype('complex64'), (2, 8), dtype('float32'), (2, 4))
    >>> cell.init(jax.random.key(0), 6)['D'].shape  # F = 6 != H = 4: a dense skip
    (6, 4)
  """

  features: int
  state_size: int | None = None
  r_min: float = _keyword(0.0)
  r_max: float = _keyword(1.0)
  max_phase: float = _keyword(2 * math.pi)
  feature_ndim = 1

  def __post_init__(self):
    _check_int('features', self.features, 1)
    if self.state_size is None:
      object.__setattr__(self, 'state_size', self.features)
    _check_int('state_size', self.state_size, 1)
    _check_real('r_min', self.r_min, 0.0, 1.0, high_open=True)
    _check_real('r_max', self.r_max, 0.0, 1.0, low_open=True)
    if not self.r_min < self.r_max:
      raise ValueError(f'`r_min` must be below `r_max`, got r_min={self.r_min} and r_max={self.r_max}.')
    _check_real('max_phase', self.max_phase, 0.0, math.inf, low_open=True, high_open=True)

  @property
  def output_size(self) -> int:
    """``H``: the width of ``y``."""
    return self.features

  def init(self, key: Array, in_features: int, dtype=jnp.float32) -> dict[str, Array]:
    """Returns the parameters for ``x: [..., F = in_features]`` (names and shapes in the class docstring)."""
    _check_int('in_features', in_features, 1)
    size, state = in_features, self.state_size
    work = accumulation_dtype(dtype)
    keys = jax.random.split(key, 7)
    tiny = jnp.finfo(work).tiny
    u1 = jax.random.uniform(keys[0], (state,), work, minval=tiny)
    u2 = jax.random.uniform(keys[1], (state,), work, minval=tiny)
    r_min, r_max = self.r_min, self.r_max
    nu_log = jnp.log(-0.5 * jnp.log(u1 * (r_max**2 - r_min**2) + r_min**2))
    theta_log = jnp.log(self.max_phase * u2)
    modulus = jnp.exp(-jnp.exp(nu_log))
    gamma_log = jnp.log(jnp.sqrt(1 - modulus**2))
    normal = lambda k, shape, scale: jax.random.normal(k, shape, work) * scale  # noqa: E731
    params = {
      'nu_log': nu_log,
      'theta_log': theta_log,
      'gamma_log': gamma_log,
      'B_re': normal(keys[2], (size, state), 1 / math.sqrt(2 * size)),
      'B_im': normal(keys[3], (size, state), 1 / math.sqrt(2 * size)),
      'C_re': normal(keys[4], (state, self.features), 1 / math.sqrt(state)),
      'C_im': normal(keys[5], (state, self.features), 1 / math.sqrt(state)),
      # The paper's elementwise skip for F = H; a dense [F, H] of the same output variance otherwise.
      'D': (
        normal(keys[6], (size,), 1.0)
        if size == self.features
        else normal(keys[6], (size, self.features), 1 / math.sqrt(size))
      ),
    }
    return {name: value.astype(dtype) for name, value in params.items()}

  def initial_carry(self, batch_shape: Sequence[int], dtype=jnp.float32) -> Array:
    """Returns zeros ``h: [*batch, N]``, complex (complex128 for float64, else complex64)."""
    return jnp.zeros((*batch_shape, self.state_size), _complex_dtype(dtype))

  def diagonal(self, params: Mapping[str, Array], dtype=jnp.float32) -> Array:
    """Returns ``lambda = exp(-exp(nu_log) + i exp(theta_log))``: ``[N]``, complex."""
    work = accumulation_dtype(dtype)
    nu = jnp.exp(params['nu_log'].astype(work))
    theta = jnp.exp(params['theta_log'].astype(work))
    # exp(-nu) (cos theta + i sin theta): no complex exp, and exact for real inputs of any width.
    modulus = jnp.exp(-nu)
    return jax.lax.complex(modulus * jnp.cos(theta), modulus * jnp.sin(theta))

  def _check(self, params: Mapping[str, Array], h: Array | None, x: Array) -> None:
    _check_param_names(
      self, params, ('nu_log', 'theta_log', 'gamma_log', 'B_re', 'B_im', 'C_re', 'C_im', 'D')
    )
    width, size = params['B_re'].shape[0], params['C_re'].shape[-1]
    skip = tuple(jnp.shape(params['D']))
    if skip != (width, size) and not (width == size and skip == (size,)):
      raise ValueError(
        f'`D` of LRUCell must have shape {[width, size] if width != size else [size]} (the dense skip '
        f'[F, H] when F != H, else [H]) for F = {width} and H = {size} (from B_re and C_re), got '
        f'{list(skip)}.'
      )
    if h is None:
      if tuple(jnp.shape(x))[-1:] != (width,):
        raise ValueError(
          f'`x` of LRUCell must have shape [*batch, F] with F = {width} (from the parameters), '
          f'got {tuple(jnp.shape(x))}.'
        )
    else:
      _check_step(self, width, h, x)

  def linear_form(self, params: Mapping[str, Array], x: Array) -> tuple[Array, Array]:
    """Returns ``(a, b) = (lambda, gamma * (x B))``, each ``[*batch, N]``, complex, for ``x: [*batch, F]``."""
    self._check(params, None, x)
    bx_re, bx_im = matmul(x, params['B_re']), matmul(x, params['B_im'])
    gamma = jnp.exp(params['gamma_log'].astype(bx_re.dtype))
    b = jax.lax.complex(gamma * bx_re, gamma * bx_im)
    a = jnp.broadcast_to(self.diagonal(params, bx_re.dtype), b.shape)
    return a, b

  def readout(self, params: Mapping[str, Array], h: Array, x: Array) -> Array:
    """Returns ``y = Re(h C) + D * x`` (``+ x D`` for a matrix ``D: [F, H]``): ``[*batch, H]`` in ``x``'s
    dtype, for ``h: [*batch, N]`` complex and ``x: [*batch, F]``."""
    work = accumulation_dtype(x.dtype)
    real, imag = jnp.real(h).astype(work), jnp.imag(h).astype(work)
    y = matmul(real, params['C_re'].astype(work)) - matmul(imag, params['C_im'].astype(work))
    d, x_work = params['D'].astype(work), x.astype(work)
    return (y + (matmul(x_work, d) if d.ndim == 2 else d * x_work)).astype(x.dtype)

  def __call__(self, params: Mapping[str, Array], carry: Array, x: Array) -> tuple[Array, Array]:
    """Returns ``(h', y)`` for ``carry h: [*batch, N]`` (complex) and ``x: [*batch, F]``."""
    h = carry
    self._check(params, h, x)
    a, b = self.linear_form(params, x)
    new_h = (a * h.astype(a.dtype) + b).astype(h.dtype)
    return new_h, self.readout(params, new_h, x)


def _sqrt_bounded_derivative(v: Array, max_gradient: float) -> Array:
  """Returns ``sqrt(v)`` whose derivative is ``1 / (2 sqrt(max(v, 1 / (4 max_gradient^2))))``.

  recurrentgemma's ``sqrt_bound_derivative`` (against NaN in bfloat16 as
  ``a -> 1``), written with ``stop_gradient`` rather than a ``custom_vjp`` so
  that forward-mode differentiation works too.
  """
  floor = 1.0 / (4.0 * max_gradient**2)
  slope = jax.lax.stop_gradient(0.5 * jax.lax.rsqrt(jnp.maximum(v, floor)))
  return jax.lax.stop_gradient(jnp.sqrt(v)) + slope * (v - jax.lax.stop_gradient(v))


@dataclasses.dataclass(frozen=True)
class RGLRUCell:
  r"""Real-Gated Linear Recurrent Unit of De et al. (2024), "Griffin" (arXiv:2402.19427), as
  recurrentgemma's ``RGLRU`` layer.

      r_t = sigmoid(x_t W_a + b_a)                  recurrence gate
      i_t = sigmoid(x_t W_x + b_x)                  input gate
      log a_t = -c * r_t * softplus(Lambda)         a_t = sigma(-Lambda)^(c r_t)
      h_t = a_t * h_{t-1} + sqrt(1 - a_t^2) * (i_t * x_t),   y_t = h_t

  for ``x_t`` of the width ``H`` (``in_features == features``, the paper's
  and recurrentgemma's case). For any other input width ``F`` the cell first
  projects, ``x'_t = x_t W_in`` with ``W_in: [F, H]`` (no bias, LeCun-normal
  ``N(0, 1/F)``; in Griffin's recurrent block the RG-LRU also follows a linear
  layer, its ``linear_x``, which has a bias and a convolution after it), and
  then computes the equations above on ``x'_t``: both gates read ``x'_t`` and
  ``b_t = sqrt(1 - a_t^2) * (i_t * x'_t)``. The layers of a stack after the
  first read ``num_directions * features`` (``2H`` in a bidirectional stack),
  so they have ``W_in``.

  ``W_a`` and ``W_x`` are block-diagonal with ``num_heads`` blocks of
  ``H / num_heads`` (recurrentgemma's ``BlockDiagonalLinear``; one block is a
  dense matrix), initialised ``N(0, 1 / (H / num_heads))``, biases zero. ``c =
  8`` as in the paper. ``Lambda`` (``a_param``) is initialised so that the
  base ``a0 = exp(-softplus(Lambda))`` has ``a0^2`` uniform in ``[min_rad^2,
  max_rad^2] = [0.9^2, 0.999^2]`` (recurrentgemma's ``rnn_param_init``:
  uniform in area on a ring); then ``a_t = a0^(c r_t)``. The derivative of
  ``sqrt(1 - a_t^2)`` is bounded by 1000, as recurrentgemma's.

  One difference from recurrentgemma: there, the first token of a document
  (``segment_pos == 0``) resets the state and is not normalised,
  ``h_0 = i_0 * x_0``. A cell step does not know whether it is the first, so
  this cell normalises every step, ``h_0 = sqrt(1 - a_0^2) * i_0 * x_0`` from
  the zero initial carry; outputs therefore differ from recurrentgemma's by that
  factor at the first step (and its decay afterwards). jaxrnn starts every
  sequence (and every packed sequence) from the initial carry, which plays
  the role of recurrentgemma's reset.

  Parameters, recurrentgemma's tree and names: ``{'a_param': [H],
  'input_gate': {'w': [heads, H/heads, H/heads], 'b': [heads, H/heads]},
  'a_gate': {'w': ..., 'b': ...}}`` (``input_gate`` is ``W_x``, ``a_gate`` is
  ``W_a``), and ``'input_proj': {'w': [F, H]}`` (``W_in``) only when ``F !=
  H``. Carry ``h: [*batch, H]``, accumulating in float32 for bfloat16 compute
  (as recurrentgemma's cache); ``x: [*batch, F]``; ``y = h``.

  Linear form: ``a = a_t``, ``b = sqrt(1 - a_t^2) * i_t * x_t`` (``x'_t`` when ``F != H``).

  Attributes:
    features: ``H``, the state and output width (and the paper's input width).
    num_heads: blocks of the gates' block-diagonal matrices; divides ``features``.
    c: the constant ``c`` of ``log a_t`` (8 in the paper).
    min_rad, max_rad: the ring of ``a0`` at initialisation, ``0 < min_rad < max_rad < 1``.
    w_init_variance_scale: scales the variance of the gates' weights at initialisation.
    max_sqrt_gradient: bound on the derivative of ``sqrt(1 - a_t^2)`` (recurrentgemma's 1000).

  Examples:
    >>> import jax, jax.numpy as jnp, jaxrnn
    >>> cell = jaxrnn.RGLRUCell(6, num_heads=2)
    >>> params = cell.init(jax.random.key(0), 6)
    >>> params['a_param'].shape, params['input_gate']['w'].shape
    ((6,), (2, 3, 3))
    >>> h, y = cell(params, cell.initial_carry((5,)), jnp.ones((5, 6)))
    >>> y.shape
    (5, 6)
    >>> 'input_proj' in params, cell.init(jax.random.key(0), 4)['input_proj']['w'].shape
    (False, (4, 6))
  """

  features: int
  num_heads: int = _keyword(1)
  c: float = _keyword(8.0)
  min_rad: float = _keyword(0.9)
  max_rad: float = _keyword(0.999)
  w_init_variance_scale: float = _keyword(1.0)
  max_sqrt_gradient: float = _keyword(1000.0)
  feature_ndim = 1

  def __post_init__(self):
    _check_int('features', self.features, 1)
    _check_int('num_heads', self.num_heads, 1)
    if self.features % self.num_heads:
      raise ValueError(
        f'`num_heads` must divide `features` (the gates have num_heads square blocks), got '
        f'features={self.features} and num_heads={self.num_heads}.'
      )
    _check_real('c', self.c, 0.0, math.inf, low_open=True, high_open=True)
    _check_real('min_rad', self.min_rad, 0.0, 1.0, low_open=True, high_open=True)
    _check_real('max_rad', self.max_rad, 0.0, 1.0, low_open=True, high_open=True)
    if not self.min_rad < self.max_rad:
      raise ValueError(
        f'`min_rad` must be below `max_rad`, got min_rad={self.min_rad} and max_rad={self.max_rad}.'
      )
    _check_real('w_init_variance_scale', self.w_init_variance_scale, 0.0, math.inf, low_open=True)
    _check_real('max_sqrt_gradient', self.max_sqrt_gradient, 0.0, math.inf, low_open=True)

  @property
  def output_size(self) -> int:
    """``H``: the width of ``y`` and of the state."""
    return self.features

  @property
  def state_size(self) -> int:
    """``N = H``: the width of the carry."""
    return self.features

  def init(self, key: Array, in_features: int, dtype=jnp.float32) -> dict:
    """Returns recurrentgemma's parameter tree for ``x: [..., F = in_features]``, with ``input_proj`` when
    ``F != H`` (shapes in the class docstring)."""
    _check_int('in_features', in_features, 1)
    heads, block = self.num_heads, self.features // self.num_heads
    work = accumulation_dtype(dtype)
    keys = jax.random.split(key, 3)
    u = jax.random.uniform(keys[0], (self.features,), work)
    log_a0 = 0.5 * jnp.log(u * (self.max_rad**2 - self.min_rad**2) + self.min_rad**2)
    a_param = jnp.log(jnp.expm1(-log_a0))  # softplus(a_param) = -log a0
    std = math.sqrt(self.w_init_variance_scale / block)

    def gate(k):
      return {
        'w': (jax.random.normal(k, (heads, block, block), work) * std).astype(dtype),
        'b': jnp.zeros((heads, block), dtype),
      }

    params = {'a_param': a_param.astype(dtype), 'input_gate': gate(keys[1]), 'a_gate': gate(keys[2])}
    if in_features != self.features:
      # fold_in, not a fourth split: the keys of the F = H tree stay the ones above.
      w = jax.random.normal(jax.random.fold_in(key, 3), (in_features, self.features), work)
      params['input_proj'] = {'w': (w / math.sqrt(in_features)).astype(dtype)}
    return params

  def initial_carry(self, batch_shape: Sequence[int], dtype=jnp.float32) -> Array:
    """Returns zeros ``h: [*batch, H]``."""
    return jnp.zeros((*batch_shape, self.features), dtype)

  def widen_carry(self, carry: Array) -> Array:
    """Hook: the state accumulates in (at least) float32, also for bfloat16 compute."""
    return _widen(carry)

  def _check(self, params: Mapping, h: Array | None, x: Array) -> None:
    _check_param_names(self, params, ('a_param', 'input_gate', 'a_gate'))
    size = params['a_param'].shape[0]
    width = size
    if 'input_proj' in params:
      w = params['input_proj']['w'] if isinstance(params['input_proj'], Mapping) else None
      if w is None or jnp.ndim(w) != 2 or w.shape[1] != size:
        got = list(jnp.shape(w)) if w is not None else type(params['input_proj']).__name__
        raise ValueError(
          f"`params['input_proj']` of RGLRUCell must be {{'w': [F, H]}} with H = {size} (from a_param), "
          f'got {got}.'
        )
      width = w.shape[0]
    if h is None:
      if tuple(jnp.shape(x))[-1:] != (width,):
        raise ValueError(
          f'`x` of RGLRUCell must have shape [*batch, F] with F = {width} (from the parameters), '
          f'got {tuple(jnp.shape(x))}.'
        )
    else:
      _check_step(self, width, h, x)

  def linear_form(self, params: Mapping, x: Array) -> tuple[Array, Array]:
    """Returns ``(a, b) = (a_t, sqrt(1 - a_t^2) * i_t * x_t)``, each ``[*batch, H]`` in >= float32, for
    ``x: [*batch, F]`` (projected first, ``x_t W_in``, when the parameters have ``input_proj``)."""
    self._check(params, None, x)
    if 'input_proj' in params:  # F != H: x' = x W_in, in the compute dtype as a Dense layer's output
      x = matmul(x, params['input_proj']['w']).astype(x.dtype)
    work = accumulation_dtype(x.dtype)
    gate_x = jax.nn.sigmoid(_block_diagonal(x, params['input_gate']))
    gate_a = jax.nn.sigmoid(_block_diagonal(x, params['a_gate']))
    log_a = -self.c * gate_a * jax.nn.softplus(params['a_param'].astype(work))
    a = jnp.exp(log_a)
    multiplier = _sqrt_bounded_derivative(-jnp.expm1(2 * log_a), self.max_sqrt_gradient)
    return a, multiplier * (gate_x * x.astype(work))

  def readout(self, params: Mapping, h: Array, x: Array) -> Array:
    """Returns ``y = h`` in the compute dtype (``x``'s): ``[*batch, H]``."""
    del params
    return h.astype(x.dtype)

  def __call__(self, params: Mapping, carry: Array, x: Array) -> tuple[Array, Array]:
    """Returns ``(h', h')`` with ``h' = a * h + b`` from ``linear_form``; ``carry h: [*batch, H]``, ``x:
    [*batch, F]``."""
    h = carry
    self._check(params, h, x)
    a, b = self.linear_form(params, x)
    new_h = (a * h.astype(a.dtype) + b).astype(h.dtype)
    return new_h, self.readout(params, new_h, x)


def _block_diagonal(x: Array, params: Mapping[str, Array]) -> Array:
  """Returns recurrentgemma's ``BlockDiagonalLinear``: ``[*batch, H]`` from ``x: [*batch, H]``, in >= float32."""
  w, b = params['w'], params['b']
  heads, block = w.shape[0], w.shape[1]
  blocks = x.reshape(*x.shape[:-1], heads, block)
  y = jnp.einsum('...hi,hij->...hj', blocks, w, preferred_element_type=accumulation_dtype(x.dtype))
  y = y + b.astype(y.dtype)
  return y.reshape(*x.shape[:-1], heads * block)
