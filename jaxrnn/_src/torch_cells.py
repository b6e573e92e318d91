"""PyTorch's cells as cell objects of the open protocol (SPEC §10): ``ElmanCell``, ``LSTMCell``, ``GRUCell``.

The math is in ``cells.py``; these frozen dataclasses hold the hyper-parameters
and give the driver every optional hook: the input projection it may hoist,
the fused backward's coefficients (``fused_kind``), one named parameter per
weight (``param_specs``, so Flax declares ``params['l0']['w_ih']`` as before)
and the bfloat16 policy (``widen_carry``: the LSTM cell state accumulates in
float32).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from collections.abc import Mapping
from collections.abc import Sequence

import jax
import jax.numpy as jnp

from jaxrnn._src import cells
from jaxrnn._src.config import _check_int
from jaxrnn._src.config import check_bool
from jaxrnn._src.init import check_init_scheme
from jaxrnn._src.init import weight_initializers
from jaxrnn._src.types import Array
from jaxrnn._src.types import Carry
from jaxrnn._src.types import CellParams
from jaxrnn._src.types import LSTMState

Initializer = Callable[..., Array]
_INIT = dict(default=None, kw_only=True)


def as_cell_params(params: CellParams | Mapping[str, Array]) -> CellParams:
  """Returns ``params`` as ``CellParams``: Flax stores them as a dict ``{'w_ih': ..., ...}``."""
  if isinstance(params, CellParams):
    return params
  if not isinstance(params, Mapping):
    raise TypeError(
      f'the parameters of a PyTorch-style cell must be CellParams or a dict of w_ih, w_hh, ..., '
      f'got {type(params).__name__}.'
    )
  unknown = sorted(set(params) - set(CellParams._fields))
  if unknown:
    raise ValueError(f'unknown parameter names {unknown}; expected some of {list(CellParams._fields)}.')
  return CellParams(**params)


class _TorchCell:
  """Shared protocol methods and hooks of the three PyTorch cells."""

  hidden_size: int
  use_bias: bool
  kernel_init: Initializer | None
  recurrent_kernel_init: Initializer | None
  bias_init: Initializer | None
  init_scheme: str
  feature_ndim = 1

  def _check_fields(self) -> None:
    _check_int('hidden_size', self.hidden_size, 1)
    check_bool('use_bias', self.use_bias)
    check_init_scheme(self.init_scheme)
    for name in ('kernel_init', 'recurrent_kernel_init', 'bias_init'):
      value = getattr(self, name)
      if value is not None and not callable(value):
        raise TypeError(f'`{name}` must be None or callable (key, shape, dtype), got {type(value).__name__}.')

  @property
  def name(self) -> str:
    """The cell's kind: ``'rnn_tanh'``, ``'rnn_relu'``, ``'lstm'`` or ``'gru'``."""
    return self.fused_kind_name

  @property
  def kind(self) -> cells.CellKind:
    return cells.CELL_KINDS[self.fused_kind_name]

  @property
  def output_size(self) -> int:
    """``H_out``: the width of ``y`` and of the hidden state."""
    return self.hidden_size

  def param_specs(self, in_features: int) -> dict[str, tuple[tuple[int, ...], Initializer]]:
    """Returns ``{name: (shape, initializer)}`` of each weight, for ``x: [..., F = in_features]``."""
    initializers = weight_initializers(
      self.hidden_size,
      self.kernel_init,
      self.recurrent_kernel_init,
      self.bias_init,
      init_scheme=self.init_scheme,
      num_gates=self.kind.num_gates,
      lstm=self.fused_kind_name == 'lstm',
    )
    gates = self.kind.num_gates * self.hidden_size
    shapes = {'w_ih': (in_features, gates), 'w_hh': (self.output_size, gates)}
    if self.use_bias:
      shapes.update(b_ih=(gates,), b_hh=(gates,))
    if getattr(self, 'proj_size', 0):
      shapes['w_hr'] = (self.hidden_size, self.proj_size)
    return {name: (shape, initializers[name]) for name, shape in shapes.items()}

  def init(self, key: Array, in_features: int, dtype=jnp.float32) -> dict[str, Array]:
    """Returns the parameters ``{'w_ih': [F, G*H], 'w_hh': [H_out, G*H], ...}``."""
    specs = self.param_specs(in_features)
    keys = jax.random.split(key, len(specs))
    return {name: init(k, shape, dtype) for k, (name, (shape, init)) in zip(keys, specs.items(), strict=True)}

  def initial_carry(self, batch_shape: Sequence[int], dtype=jnp.float32) -> Array:
    """Returns zeros ``h: [*batch, H_out]``."""
    return jnp.zeros((*batch_shape, self.output_size), dtype)

  def project_input(self, params, x: Array) -> Array:
    """Hook: returns ``x @ w_ih + b_ih``, ``[..., G*H]``; the driver may hoist it out of the loop."""
    return cells.project_input(as_cell_params(params), x)

  def recurrence(self, params, carry: Carry, gx: Array) -> tuple[Carry, Array]:
    """Hook: returns ``(new_carry, y)`` from the projected input ``gx``."""
    return self.kind.recurrence(as_cell_params(params), carry, gx)

  @property
  def fused_kind(self) -> cells.CellKind | None:
    """Hook: the fused backward's coefficients (``CellKind``), or None where it does not apply."""
    return self.kind

  def widen_carry(self, carry: Carry) -> Carry:
    """Hook: the carry with the leaves that accumulate in (at least) float32 widened."""
    return carry


@dataclasses.dataclass(frozen=True)
class ElmanCell(_TorchCell):
  """Elman cell, like ``torch.nn.RNNCell``: ``h' = act(x w_ih + b_ih + h w_hh + b_hh)``.

  Parameters: ``w_ih [F, H]``, ``w_hh [H, H]``, ``b_ih``, ``b_hh [H]``; carry
  ``h: [*batch, H]``; output ``y = h'``.

  Attributes:
    hidden_size: ``H``.
    nonlinearity: ``'tanh'`` or ``'relu'``.
    use_bias: add ``b_ih`` and ``b_hh``.
    kernel_init, recurrent_kernel_init, bias_init: initializers of ``w_ih``,
      ``w_hh`` and the biases; ``None`` takes ``init_scheme``'s.
    init_scheme: the defaults of the initializers left ``None``:
      ``'pytorch'`` (``U(-1/sqrt(H), 1/sqrt(H))`` everywhere), ``'flax'``
      (Flax's cells: ``lecun_normal`` and ``orthogonal`` per gate, zero
      biases) or ``'keras'`` (``glorot_uniform``, ``orthogonal``, zero
      biases); see [Initialisation](../getting-started.md#initialisation).

  Examples:
    >>> import jax, jax.numpy as jnp, jaxrnn
    >>> cell = jaxrnn.ElmanCell(4, nonlinearity='relu')
    >>> params = cell.init(jax.random.key(0), 3)
    >>> h, y = cell(params, cell.initial_carry((2,)), jnp.ones((2, 3)))
    >>> h.shape, bool((y >= 0).all())
    ((2, 4), True)
  """

  hidden_size: int
  nonlinearity: str = 'tanh'
  use_bias: bool = True
  kernel_init: Initializer | None = dataclasses.field(**_INIT)
  recurrent_kernel_init: Initializer | None = dataclasses.field(**_INIT)
  bias_init: Initializer | None = dataclasses.field(**_INIT)
  init_scheme: str = dataclasses.field(default='pytorch', kw_only=True)

  def __post_init__(self):
    self._check_fields()
    if self.nonlinearity not in ('tanh', 'relu'):
      raise ValueError(f"`nonlinearity` must be 'tanh' or 'relu', got {self.nonlinearity!r}.")

  @property
  def fused_kind_name(self) -> str:
    return f'rnn_{self.nonlinearity}'

  def __call__(self, params, carry: Array, x: Array) -> tuple[Array, Array]:
    """Returns ``(h', h')`` for ``carry h: [*batch, H]`` and ``x: [*batch, F]``."""
    step = cells.rnn_tanh_cell if self.nonlinearity == 'tanh' else cells.rnn_relu_cell
    return step(as_cell_params(params), carry, x)


@dataclasses.dataclass(frozen=True)
class LSTMCell(_TorchCell):
  """LSTM cell, like ``torch.nn.LSTM``'s step (gates ``i, f, g, o``, optional projection).

  Parameters: ``w_ih [F, 4H]``, ``w_hh [H_out, 4H]``, ``b_ih``, ``b_hh [4H]``
  and, with ``proj_size = P``, ``w_hr [H, P]``. Carry
  [`LSTMState`][jaxrnn.LSTMState] ``(h: [*batch, H_out], c: [*batch, H])``;
  output ``y = h'``. ``H_out = P`` if ``P`` else ``H``.

  Attributes:
    hidden_size: ``H``.
    proj_size: ``P``, project ``h`` to ``P < H`` features; ``0`` for none.
    use_bias: add ``b_ih`` and ``b_hh``.
    kernel_init, recurrent_kernel_init, bias_init: initializers of ``w_ih``
      (and ``w_hr``), ``w_hh`` and the biases; ``None`` takes ``init_scheme``'s.
    init_scheme: the defaults of the initializers left ``None``:
      ``'pytorch'`` (``U(-1/sqrt(H), 1/sqrt(H))`` everywhere), ``'flax'``
      (Flax's cells: ``lecun_normal`` and ``orthogonal`` per gate, zero
      biases) or ``'keras'`` (``glorot_uniform``, ``orthogonal``, zero
      biases but ones in the forget block of ``b_ih``); see [Initialisation](../getting-started.md#initialisation).

  Examples:
    >>> import jax, jax.numpy as jnp, jaxrnn
    >>> cell = jaxrnn.LSTMCell(8, proj_size=2)
    >>> params = cell.init(jax.random.key(0), 3)
    >>> (h, c), y = cell(params, cell.initial_carry((5,)), jnp.ones((5, 3)))
    >>> h.shape, c.shape
    ((5, 2), (5, 8))
  """

  hidden_size: int
  proj_size: int = 0
  use_bias: bool = True
  kernel_init: Initializer | None = dataclasses.field(**_INIT)
  recurrent_kernel_init: Initializer | None = dataclasses.field(**_INIT)
  bias_init: Initializer | None = dataclasses.field(**_INIT)
  init_scheme: str = dataclasses.field(default='pytorch', kw_only=True)
  fused_kind_name = 'lstm'

  def __post_init__(self):
    self._check_fields()
    _check_int('proj_size', self.proj_size, 0)
    if self.proj_size >= self.hidden_size:
      raise ValueError(
        f'`proj_size` must be smaller than `hidden_size` ({self.hidden_size}), got {self.proj_size}.'
      )

  @property
  def output_size(self) -> int:
    """``H_out``: ``proj_size`` if set, else ``hidden_size``."""
    return self.proj_size or self.hidden_size

  @property
  def fused_kind(self) -> cells.CellKind | None:
    """Hook: the fused backward's coefficients; None with a projection (a matmul after the gates)."""
    return None if self.proj_size else self.kind

  def initial_carry(self, batch_shape: Sequence[int], dtype=jnp.float32) -> LSTMState:
    """Returns zeros ``LSTMState(h: [*batch, H_out], c: [*batch, H])``."""
    return LSTMState(
      jnp.zeros((*batch_shape, self.output_size), dtype), jnp.zeros((*batch_shape, self.hidden_size), dtype)
    )

  def hidden_leaves(self, carry: LSTMState) -> LSTMState:
    """Hook: recurrent dropout masks ``h`` (the input of the recurrent matmul), not ``c``."""
    return LSTMState(True, False)

  def widen_carry(self, carry: LSTMState) -> LSTMState:
    """Hook: the cell state ``c`` accumulates in (at least) float32, also for bfloat16 compute."""
    return LSTMState(carry.h, carry.c.astype(cells.accumulation_dtype(carry.c.dtype)))

  def __call__(self, params, carry: LSTMState, x: Array) -> tuple[LSTMState, Array]:
    """Returns ``(LSTMState(h', c'), h')`` for ``x: [*batch, F]``."""
    return cells.lstm_cell(as_cell_params(params), carry, x)


@dataclasses.dataclass(frozen=True)
class GRUCell(_TorchCell):
  """GRU cell, like ``torch.nn.GRU``'s step (gates ``r, z, n``, reset after the recurrent matmul).

  Parameters: ``w_ih [F, 3H]``, ``w_hh [H, 3H]``, ``b_ih``, ``b_hh [3H]``;
  carry ``h: [*batch, H]``; output ``y = h'``. With ``z, r`` the sigmoid gates,

      n  = tanh(x W_in + b_in + r * (h W_hn + b_hn))     (reset_after=True, PyTorch)
      n  = tanh(x W_in + b_in + (r * h) W_hn + b_hn)     (reset_after=False)
      h' = (1 - z) * n + z * h

  Attributes:
    hidden_size: ``H``.
    use_bias: add ``b_ih`` and ``b_hh``.
    reset_after: apply the reset gate after the recurrent matmul (PyTorch,
      cuDNN, Keras 3's default, ONNX ``linear_before_reset=1``), or, with
      False, before it (Keras 2's and TensorFlow 1's default). The
      reset-before form runs the generic backward (no fused backward) and has
      no PyTorch counterpart: ``to_torch`` refuses it.
    kernel_init, recurrent_kernel_init, bias_init: initializers of ``w_ih``,
      ``w_hh`` and the biases; ``None`` takes ``init_scheme``'s.
    init_scheme: ``'pytorch'``, ``'flax'`` or ``'keras'``, as for
      [`ElmanCell`][jaxrnn.ElmanCell].

  Examples:
    >>> import jax, jax.numpy as jnp, jaxrnn
    >>> cell = jaxrnn.GRUCell(4)
    >>> params = cell.init(jax.random.key(0), 3)
    >>> h, y = cell(params, cell.initial_carry((2,)), jnp.ones((2, 3)))
    >>> h.shape
    (2, 4)
  """

  hidden_size: int
  use_bias: bool = True
  kernel_init: Initializer | None = dataclasses.field(**_INIT)
  recurrent_kernel_init: Initializer | None = dataclasses.field(**_INIT)
  bias_init: Initializer | None = dataclasses.field(**_INIT)
  init_scheme: str = dataclasses.field(default='pytorch', kw_only=True)
  reset_after: bool = dataclasses.field(default=True, kw_only=True)
  fused_kind_name = 'gru'

  def __post_init__(self):
    self._check_fields()
    check_bool('reset_after', self.reset_after)

  @property
  def fused_kind(self) -> cells.CellKind | None:
    """Hook: the fused backward's coefficients; None with ``reset_after=False`` (a matmul after ``r``)."""
    return self.kind if self.reset_after else None

  def recurrence(self, params, carry: Array, gx: Array) -> tuple[Array, Array]:
    """Hook: returns ``(h', h')`` from the projected input ``gx``."""
    if self.reset_after:
      return super().recurrence(params, carry, gx)
    return cells.gru_reset_before_recurrence(as_cell_params(params), carry, gx)

  def __call__(self, params, carry: Array, x: Array) -> tuple[Array, Array]:
    """Returns ``(h', h')`` for ``carry h: [*batch, H]`` and ``x: [*batch, F]``."""
    if self.reset_after:
      return cells.gru_cell(as_cell_params(params), carry, x)
    params = as_cell_params(params)
    cells.check_step_args(params, carry, x)
    return self.recurrence(params, carry, cells.project_input(params, x))


def builtin_cell_of(layer, conversion: str) -> _TorchCell:
  """Returns the one ``ElmanCell``/``LSTMCell``/``GRUCell`` of ``layer``'s rows for a converter.

  Raises:
    TypeError: ``layer`` is no jaxrnn layer or runs another cell (or two), named in the message
      with ``conversion``, e.g. ``'PyTorch conversion'``.
  """
  config = getattr(layer, 'config', None)
  layer_cells = config.cells if config is not None else ()
  if len(layer_cells) != 1 or not isinstance(layer_cells[0], (ElmanCell, LSTMCell, GRUCell)):
    raise TypeError(
      f'{conversion} needs a layer over ElmanCell, LSTMCell or GRUCell (jaxrnn.RNN, LSTM, GRU or '
      f'Recurrent over one of them), got {type(layer).__name__}'
      + (f' over {", ".join(type(c).__name__ for c in layer_cells)}.' if layer_cells else '.')
    )
  return layer_cells[0]
