"""Flax linen layers: they declare parameters and call the functional core."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from collections.abc import Mapping
from typing import Any
from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxrnn._src.checks import carry_mix_up_hint
from jaxrnn._src.checks import check_inputs
from jaxrnn._src.checks import check_params_fit
from jaxrnn._src.checks import check_step_input
from jaxrnn._src.compose import apply_layers
from jaxrnn._src.compose import cast_floating
from jaxrnn._src.compose import compute_dtype
from jaxrnn._src.compose import step_layers
from jaxrnn._src.compose import widen_carry
from jaxrnn._src.config import check_cell
from jaxrnn._src.fields import LayerFields
from jaxrnn._src.fields import option_fields
from jaxrnn._src.fields import preset_fields
from jaxrnn._src.torch_cells import ElmanCell
from jaxrnn._src.torch_cells import GRUCell
from jaxrnn._src.torch_cells import LSTMCell
from jaxrnn._src.types import Array
from jaxrnn._src.types import Carry
from jaxrnn._src.types import Cell

Initializer = Callable[..., Array]


class _CellWeights(nn.Module):
  """Declares one layer-direction's weights, one parameter per name (a cell's ``param_specs``)."""

  specs: dict
  param_dtype: Any

  @nn.compact
  def __call__(self) -> dict:
    return {
      name: self.param(name, init, shape, self.param_dtype) for name, (shape, init) in self.specs.items()
    }


class _Layer(LayerFields, option_fields, nn.Module):
  """Shared call and ``step`` of ``Recurrent`` and the presets ``RNN``, ``LSTM``, ``GRU``."""

  def __post_init__(self):
    super().__post_init__()
    self.config  # noqa: B018  (validates the hyper-parameters at construction)

  # The one compact method: the sequence call and `step` both declare parameters through it, so
  # a parent module that only ever calls `step` (a decoder under nn.scan) initialises the same
  # tree. Flax allows `self.param` only in setup or a compact method, and setup cannot know
  # `in_features`; `__call__` and `step` are plain methods that call this one.
  @nn.compact
  def _declare_params(self, config, in_features) -> list:
    """Declares (at ``init``) or reads the ``L*D`` parameter groups ``l0``, ``l0_reverse``, ..."""
    params = []
    for row, name in enumerate(config.param_names):
      cell = config.row_cell(row)
      features = config.layer_features(row // config.num_directions, in_features)
      if hasattr(cell, 'param_specs'):  # one named parameter per weight: params['l0']['w_ih']
        params.append(_CellWeights(cell.param_specs(features), self.param_dtype, name=name)())
      else:  # the cell's own pytree: params['l0']
        params.append(self.param(name, cell.init, features, self.param_dtype))
    return params

  def __call__(
    self,
    inputs: Array,
    seq_lengths: Array | None = None,
    initial_carry: Carry | None = None,
    *,
    segment_ids: Array | None = None,
    num_segments: int | None = None,
    deterministic: bool = True,
  ) -> tuple[Array, Carry]:
    """Returns ``(outputs, final_carry)``.

    Args:
      inputs: ``[*batch, T, F]``, or ``[T, *batch, F]`` when ``time_major``
        (``F`` stands for the cell's ``feature_ndim`` feature axes).
      seq_lengths: integers ``[*batch]`` in ``[0, T]``; ``None`` means all ``T``.
      initial_carry: shaped like ``final_carry``; ``None`` means zeros. With
        ``segment_ids``, ``[L*D, *batch, S, ...]`` (one per sequence) or
        ``[L*D, *batch, ...]`` (shared by a row's sequences).
      segment_ids: integers ``[*batch, T]`` (time-major ``[T, *batch]``) instead
        of ``seq_lengths``: several sequences packed in each row, ``0`` for
        padding and ``1..S`` for the sequences, each a contiguous run (SPEC §11).
        Every sequence runs as if alone, in both directions.
      num_segments: ``S``, a Python int (static under jit); ``None`` is the
        largest id, which needs concrete ids.
      deterministic: if False, apply dropout between layers and recurrent
        dropout (``'dropout'`` rng).

    Returns:
      outputs: the last layer's output at every step, ``[*batch, T, D*H_out]``
        (time-major ``[T, *batch, D*H_out]``), forward half first; exact zeros
        at ``t >= seq_lengths``.
      final_carry: the state of every layer and direction after its last valid
        step, ``[L*D, *batch, H_out]``, row ``layer*D + direction``. For LSTM an
        [`LSTMState`][jaxrnn.LSTMState] ``(h, c)`` with ``c: [L*D, *batch, H]``,
        which unpacks like PyTorch's ``(h_n, c_n)``; for any cell its carry
        with every leaf stacked ``[L*D, *batch, ...]``. With ``segment_ids``, every leaf
        ``[L*D, *batch, S, ...]``: index ``s - 1`` holds sequence ``s``'s final
        state (the initial carry for ids that do not occur).
    """
    config = self.config
    _, _, _, in_features = check_inputs(inputs, config.time_major, config.feature_ndim)
    name = config.param_names[0]
    if self.has_variable('params', name):  # before Flax's own, less clear shape error
      check_params_fit(config, self.get_variable('params', name), in_features)
    params = self._declare_params(config, in_features)
    rng = None
    if config.draws_dropout(deterministic):
      rng = self.make_rng('dropout')
    return apply_layers(
      config,
      params,
      inputs,
      seq_lengths,
      initial_carry,
      segment_ids=segment_ids,
      num_segments=num_segments,
      dtype=self.dtype,
      dropout_rng=rng,
      deterministic=deterministic,
    )

  def step(self, x_t: Array, carry: Carry | None = None) -> tuple[Array, Carry]:
    """Returns ``(y_t, new_carry)`` of one time step, with the sequence call's parameters.

    Use it as ``layer.apply(variables, x_t, carry, method='step')``; stepping
    through a sequence reproduces the sequence call. Unidirectional layers only.
    At ``init`` it creates the parameters the sequence call would (reading
    ``F`` from ``x_t``), so a parent module that only calls ``step``, say a
    decoder under ``nn.scan``, initialises as it would with the sequence call.

    Args:
      x_t: ``[*batch, F]``, one step of input.
      carry: ``[L, *batch, H_out]`` (``LSTMState`` for LSTM), e.g. a sequence
        call's ``final_carry`` or ``layer.initial_carry(batch_shape)``;
        ``None`` means zeros.

    Returns:
      y_t: ``[*batch, H_out]``, the last layer's output at this step.
      new_carry: the state after this step, shaped like ``carry``.
    """
    config = self.config
    in_features = check_step_input(x_t, config.feature_ndim)
    name = config.param_names[0]
    if self.has_variable('params', name):
      check_params_fit(config, self.get_variable('params', name), in_features, 'x_t')
    elif not self.is_initializing():
      raise ValueError(
        f'`step` needs initialized parameters, found no {name!r}: apply it with the variables of '
        "`layer.init(key, inputs)` or `layer.init(key, x_t, method='step')` (inside a parent module, "
        "the parent's `init` creates them)."
      )
    params = self._declare_params(config, in_features)
    return step_layers(config, params, x_t, carry, dtype=self.dtype)


class Recurrent(_Layer):
  """Any cell as a recurrent layer: stacked, bidirectional, padded (SPEC §10).

  Runs ``cell`` (a built-in such as [`LSTMCell`][jaxrnn.LSTMCell], a user's
  own cell written against the [`Cell`][jaxrnn.Cell] protocol, or a Flax cell
  through [`FlaxCell`][jaxrnn.linen.FlaxCell]) with every guarantee of the
  presets: padding never read and exact zeros there, the carry of each
  sequence's last valid step (the initial carry for length 0), a backward
  direction that starts at each sequence's own last element, any number of
  batch axes, ``step`` and streaming. Cells with hooks run on the faster paths
  (hoisted projection, fused backward); others on autodiff.

  Attributes:
    cell: the cell of every layer and direction.
    backward_cell: the backward direction's cell when ``bidirectional`` (as
      Flax's ``nn.Bidirectional`` allows); ``None`` uses ``cell``. Same output
      size and carry shapes as ``cell``.

  The other attributes (``num_layers``, ``bidirectional``, ``time_major``,
  ``dropout``, ``recurrent_dropout``, ``dtype``, ``param_dtype``, ``unroll``,
  ``remat``, ``checkpoint_every``, ``hoist_input_projection``,
  ``fused_backward``, ``scan_mode``, ``loop``) are those of [`RNN`][jaxrnn.RNN], keyword-only.

  Parameters are ``params['l0']``, ``params['l0_reverse']``, ...: the tree of
  the cell's ``init`` for layer 0, which reads ``F`` features; layer ``k > 0``
  reads ``D * H_out``. Built-in cells name each weight, as the presets do.

  Examples:
    >>> import jax, jax.numpy as jnp, jaxrnn
    >>> layer = jaxrnn.Recurrent(jaxrnn.GRUCell(8), num_layers=2, bidirectional=True)
    >>> x, lengths = jnp.ones((3, 5, 2)), jnp.array([5, 2, 0])
    >>> variables = layer.init(jax.random.key(0), x, lengths)
    >>> outputs, final_carry = layer.apply(variables, x, lengths)
    >>> outputs.shape, final_carry.shape
    ((3, 5, 16), (4, 3, 8))
  """

  cell: Cell
  backward_cell: Cell | None = dataclasses.field(default=None, kw_only=True)


class RNN(preset_fields(ElmanCell), _Layer):
  """Elman RNN layer, like ``torch.nn.RNN``: ``h' = act(x w_ih + b_ih + h w_hh + b_hh)``.

  Attributes:
    hidden_size: ``H``.
    num_layers: ``L``; layer ``k > 0`` reads the ``D*H`` outputs of layer ``k-1``.
    bidirectional: run a backward direction too (``D = 2``).
    time_major: inputs and outputs are ``[T, *batch, ...]`` instead of
      ``[*batch, T, ...]``; never changes the carry layout.
    dropout: dropout rate on the outputs of every layer but the last.
    recurrent_dropout: dropout rate on the hidden state each step reads, one
      mask per sequence reused at every step (variational dropout, Gal &
      Ghahramani 2016; Keras's ``recurrent_dropout``); runs the autodiff loop.
    use_bias: add ``b_ih`` and ``b_hh``.
    dtype: compute dtype (``None``: promote inputs and parameters).
    param_dtype: dtype of the parameters.
    kernel_init, recurrent_kernel_init, bias_init: initializers of ``w_ih``,
      ``w_hh`` and the biases; ``None`` takes ``init_scheme``'s.
    init_scheme: the defaults of the initializers left ``None``:
      ``'pytorch'`` (``U(-1/sqrt(H), 1/sqrt(H))``, PyTorch's), ``'flax'``
      (Flax's cells: ``lecun_normal`` and ``orthogonal`` per gate, zero
      biases) or ``'keras'`` (``glorot_uniform``, ``orthogonal``, zero
      biases, LSTM forget bias 1); see
      [Initialisation](../getting-started.md#initialisation).
    unroll: time steps per loop iteration; ``None`` picks per backend (4 on
      GPU, where it cut S1 forward+backward from 3.4 to 2.6 ms on an H200; 1
      elsewhere).
    remat: recompute each step in the backward pass instead of storing it.
    checkpoint_every: if ``k > 0``, the backward pass stores the carry only
      every ``k`` steps and recomputes the steps in between: memory
      ``O(T/k + k)`` instead of ``O(T)`` for one more forward pass of compute;
      ``k`` about ``sqrt(T)`` is the usual choice for long sequences.
    hoist_input_projection: compute ``x @ w_ih`` for all steps before the loop;
      ``None`` picks per backend (on for GPU/TPU, off for CPU).
    fused_backward: use the hand-written backward pass (one matmul per step,
      weight gradients as one matmul over all steps; same values, faster).
      ``None`` (default) uses it wherever it applies (not with ``proj_size``
      or ``remat``). It has no forward-mode derivative: set ``False`` for
      ``jax.jvp``/``jax.jacfwd`` through the layer (``jax.grad`` and
      ``jax.hessian``, which differentiates a gradient, work either way).
    scan_mode: how cells linear in their carry (a ``linear_form`` hook, e.g.
      ``MinGRUCell``; SPEC §12) run: ``'associative'`` (one
      ``jax.lax.associative_scan``, depth ``log T``), ``'sequential'`` (the
      step-by-step loop) or ``'auto'`` (sequential on CPU, where it measured
      faster, associative elsewhere); the same results either way. Other cells
      always run sequentially.
    loop: how the built-in cells' time loop runs: ``'scan'`` (XLA's loop),
      ``'pallas'`` (each layer direction's forward and backward loops as one
      Pallas kernel each, no kernel launch per step; Triton on GPU, interpret
      mode elsewhere; not with packed sequences, ``recurrent_dropout``,
      ``proj_size``, ``remat`` or ``fused_backward=False``) or ``'auto'``
      (``'scan'`` everywhere until the Pallas loop is measured on a GPU).
      Same results either way.
    nonlinearity: ``'tanh'`` or ``'relu'``.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> import jaxrnn
    >>> layer = jaxrnn.RNN(hidden_size=4, num_layers=2)
    >>> x = jnp.ones((3, 5, 2))  # B=3, T=5, F=2
    >>> variables = layer.init(jax.random.key(0), x)
    >>> outputs, final_carry = layer.apply(variables, x)
    >>> outputs.shape, final_carry.shape
    ((3, 5, 4), (2, 3, 4))
  """

  cell_type: ClassVar[type] = ElmanCell


class LSTM(preset_fields(LSTMCell), _Layer):
  """LSTM layer, like ``torch.nn.LSTM`` (gates ``i, f, g, o``, optional projection).

  Attributes are those of [`RNN`][jaxrnn.RNN] (without ``nonlinearity``) plus
  ``proj_size``: ``P``, project ``h`` to ``P < H`` features with ``w_hr [H, P]``
  (initialized with ``kernel_init``, or ``init_scheme``'s); ``0`` means no projection.

  ``final_carry`` is an [`LSTMState`][jaxrnn.LSTMState] ``(h, c)``, which unpacks like
  PyTorch's ``(h_n, c_n)``.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> import jaxrnn
    >>> layer = jaxrnn.LSTM(hidden_size=8, bidirectional=True)
    >>> x = jnp.ones((2, 6, 3))  # B=2, T=6, F=3
    >>> lengths = jnp.array([6, 4])
    >>> variables = layer.init(jax.random.key(0), x, lengths)
    >>> outputs, (h_n, c_n) = layer.apply(variables, x, lengths)
    >>> outputs.shape, h_n.shape, c_n.shape
    ((2, 6, 16), (2, 2, 8), (2, 2, 8))
    >>> bool(jnp.allclose(outputs[1, 3, :8], h_n[0, 1]))  # forward: step len-1
    True
    >>> bool(jnp.allclose(outputs[1, 0, 8:], h_n[1, 1]))  # backward: step 0
    True
  """

  cell_type: ClassVar[type] = LSTMCell


class GRU(preset_fields(GRUCell), _Layer):
  """GRU layer, like ``torch.nn.GRU`` (gates ``r, z, n``, reset after the recurrent matmul).

  Attributes are those of [`RNN`][jaxrnn.RNN] without ``nonlinearity``.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> import jaxrnn
    >>> layer = jaxrnn.GRU(hidden_size=8, time_major=True)
    >>> x = jnp.ones((6, 2, 3))  # T=6, B=2, F=3
    >>> variables = layer.init(jax.random.key(0), x)
    >>> outputs, final_carry = layer.apply(variables, x)
    >>> outputs.shape, final_carry.shape
    ((6, 2, 8), (1, 2, 8))
  """

  cell_type: ClassVar[type] = GRUCell


# CellModule: a jaxrnn cell as a flax.linen cell, for Flax's own wrappers
#
# ``CellModule``: a jaxrnn cell as a ``flax.linen`` recurrent cell (``nn.RNNCellBase``).
#
# The reverse of ``FlaxCell``: Flax's own wrappers (``nn.RNN``, ``nn.Bidirectional``,
# ``nn.scan`` over a cell) take a module with ``__call__(carry, x) -> (carry, y)``,
# ``initialize_carry(rng, input_shape)`` and ``num_feature_axes``. The module only
# declares the cell's parameters, under the names a ``Recurrent`` layer gives them in
# ``params['l0']``, so moving parameters between the two is a renaming of that one
# group: ``nn.RNN`` keeps them in ``params['cell']``.


class CellModule(nn.RNNCellBase):
  """A jaxrnn cell as a linen ``nn.RNNCellBase``, for ``nn.RNN`` and ``nn.Bidirectional``.

  Runs any cell of the [`Cell`][jaxrnn.Cell] protocol
  ([`LSTMCell`][jaxrnn.LSTMCell], [`GRUCell`][jaxrnn.GRUCell],
  [`ConvLSTMCell`][jaxrnn.ConvLSTMCell], a cell of your own) inside Flax's
  wrappers, ``nn.scan`` and modules that step a cell by hand. One call is one
  step, ``(carry, x) -> (new_carry, y)`` with ``x: [*batch, *features]``.

  - Parameters: those of ``jaxrnn.Recurrent(cell)``'s ``params['l0']``, under
    the same names (``w_ih``, ``w_hh``, ... for the built-in cells); ``nn.RNN``
    keeps them in ``params['cell']``.
  - Carry: the cell's own, for one row: ``LSTMState(h, c)`` for
    ``LSTMCell`` (not Flax's ``(c, h)``; a carry of another structure is a
    ``TypeError``), ``h: [*batch, H]`` for ``GRUCell``.
  - On full-length sequences ``nn.RNN(CellModule(cell))`` equals
    ``jaxrnn.Recurrent(cell)``. With ``seq_lengths`` Flax's wrappers keep their
    own padding semantics (the cell runs over padding); jaxrnn's layers do not.

  Attributes:
    cell: the jaxrnn cell.
    dtype: compute dtype; ``None`` promotes the inputs' and parameters' dtypes.
      The carry keeps its dtypes (the LSTM cell state stays float32 under
      bfloat16, as in the layers).
    param_dtype: the parameters' dtype.

  Examples:
    >>> import jax, jax.numpy as jnp, flax.linen as nn, jaxrnn
    >>> rnn = nn.RNN(jaxrnn.linen.CellModule(jaxrnn.LSTMCell(8)), return_carry=True)
    >>> x = jnp.ones((2, 5, 3))  # [B, T, F]
    >>> variables = rnn.init(jax.random.key(0), x)
    >>> (h, c), y = rnn.apply(variables, x)  # LSTMState(h, c): [B, H] each
    >>> y.shape, h.shape, sorted(variables['params']['cell'])
    ((2, 5, 8), (2, 8), ['b_hh', 'b_ih', 'w_hh', 'w_ih'])
    >>> layer = jaxrnn.Recurrent(jaxrnn.LSTMCell(8))
    >>> outputs, _ = layer.apply({'params': {'l0': variables['params']['cell']}}, x)
    >>> bool(jnp.allclose(outputs, y, atol=1e-6))
    True
  """

  cell: Cell
  dtype: Any = None
  param_dtype: Any = jnp.float32

  def __post_init__(self):
    if isinstance(self.cell, nn.Module):
      raise TypeError(
        f'`cell` must be a jaxrnn cell such as jaxrnn.LSTMCell(8), got the flax.linen module '
        f'{type(self.cell).__name__}, which nn.RNN takes as it is.'
      )
    check_cell(self.cell)
    super().__post_init__()

  @property
  def num_feature_axes(self) -> int:
    """Trailing feature axes of ``x``: the cell's ``feature_ndim`` (1 for vectors)."""
    return getattr(self.cell, 'feature_ndim', 1)

  @nn.nowrap
  def initialize_carry(self, rng: Array, input_shape: tuple[int, ...]) -> Any:
    """Returns the cell's zeros carry for one step's input shape ``[*batch, *features]``.

    Args:
      rng: unused (the carry is zeros); Flax's signature.
      input_shape: ``[*batch, *features]``, the shape of one step ``x``.

    Returns:
      carry: ``cell.initial_carry(batch_shape)`` in ``dtype`` (``param_dtype``
        when ``dtype`` is None), with the leaves that accumulate in float32
        (the LSTM cell state) widened.
    """
    del rng
    ndim = self.num_feature_axes
    if len(input_shape) < 1 + ndim:
      raise ValueError(
        f'`input_shape` must be [*batch, *features] with at least one batch axis and {ndim} feature '
        f'axes, got {tuple(input_shape)}.'
      )
    dtype = self.param_dtype if self.dtype is None else self.dtype
    return widen_carry(
      self.cell, self.cell.initial_carry(tuple(input_shape[: len(input_shape) - ndim]), dtype)
    )

  def _declare_params(self, in_features) -> Any:
    cell = self.cell
    if hasattr(cell, 'param_specs'):  # one parameter per weight, as Recurrent's `_CellWeights`
      return {
        name: self.param(name, init, shape, self.param_dtype)
        for name, (shape, init) in cell.param_specs(in_features).items()
      }
    shapes = jax.eval_shape(lambda key: cell.init(key, in_features, self.param_dtype), jax.random.key(0))
    if not isinstance(shapes, Mapping):  # a NamedTuple or list: one parameter holding the tree
      return self.param('params', cell.init, in_features, self.param_dtype)
    # A dict: its entries as the module's parameters, so params['cell'] is Recurrent's params['l0'].
    # `init` draws the whole tree once, with the key of the first entry.
    drawn = {}

    def entry(name):
      def init(key):
        if not drawn:
          drawn.update(cell.init(key, in_features, self.param_dtype))
        return drawn[name]

      return init

    return {name: self.param(name, entry(name)) for name in shapes}

  @nn.compact
  def __call__(self, carry: Any, x: Array) -> tuple[Any, Array]:
    """Returns ``(new_carry, y)`` of one step.

    Args:
      carry: the cell's carry, e.g. from ``initialize_carry``:
        ``LSTMState(h: [*batch, H_out], c: [*batch, H])`` for ``LSTMCell``,
        ``h: [*batch, H]`` for ``GRUCell``.
      x: ``[*batch, F]`` (``[*batch, *features]`` for ``feature_ndim > 1``).

    Returns:
      new_carry: like ``carry``, in its dtypes.
      y: ``[*batch, H_out]`` in the compute dtype.
    """
    in_features = check_step_input(x, self.num_feature_axes, 'x')
    expected = jax.eval_shape(lambda: self.initialize_carry(None, x.shape))
    if jax.tree.structure(carry) != jax.tree.structure(expected):
      raise TypeError(
        f'`carry` of {type(self.cell).__name__} must have the structure of `initialize_carry`, '
        f'{jax.tree.structure(expected)}, got {jax.tree.structure(carry)}.'
        f'{carry_mix_up_hint(expected, carry)}'
      )
    for (path, leaf), want in zip(
      jax.tree_util.tree_leaves_with_path(carry), jax.tree.leaves(expected), strict=True
    ):
      if tuple(jnp.shape(leaf)) != want.shape:
        raise ValueError(
          f'`carry{jax.tree_util.keystr(path)}` must have shape {want.shape} for `x` of shape '
          f'{tuple(x.shape)}, got {tuple(jnp.shape(leaf))}.'
        )
    params = self._declare_params(in_features)
    dtype = compute_dtype(x, [params], self.dtype)
    # The step sees the carry as the layers do: the compute dtype, float32 where the cell widens.
    cell = self.cell
    batch_shape = x.shape[: x.ndim - self.num_feature_axes]
    step_dtypes = jax.eval_shape(lambda: widen_carry(cell, cell.initial_carry(batch_shape, dtype)))
    step_carry = jax.tree.map(lambda leaf, want: jnp.asarray(leaf).astype(want.dtype), carry, step_dtypes)
    new_carry, y = cell(cast_floating(params, dtype), step_carry, x.astype(dtype))
    return jax.tree.map(lambda new, old: new.astype(jnp.result_type(old)), new_carry, carry), y
