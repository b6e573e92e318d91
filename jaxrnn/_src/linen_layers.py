"""Flax linen layers: they declare parameters and call the functional core."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from typing import ClassVar

import flax.linen as nn
import jax.numpy as jnp

from jaxrnn._src.checks import check_features
from jaxrnn._src.checks import check_inputs
from jaxrnn._src.compose import apply_layers
from jaxrnn._src.compose import step_layers
from jaxrnn._src.fields import LayerFields
from jaxrnn._src.init import weight_initializers
from jaxrnn._src.types import Array
from jaxrnn._src.types import Carry
from jaxrnn._src.types import CellParams

Initializer = Callable[..., Array]


class _CellWeights(nn.Module):
  """Declares one layer-direction's weights (shapes from ``LayerConfig.weight_shapes``)."""

  shapes: dict
  initializers: dict
  param_dtype: Any

  @nn.compact
  def __call__(self) -> CellParams:
    return CellParams(
      **{
        name: self.param(name, self.initializers[name], shape, self.param_dtype)
        for name, shape in self.shapes.items()
      }
    )


class _RecurrentLayer(LayerFields, nn.Module):
  """Shared fields and call of ``RNN``, ``LSTM`` and ``GRU``."""

  hidden_size: int
  num_layers: int = 1
  bidirectional: bool = False
  time_major: bool = False
  dropout: float = 0.0
  use_bias: bool = True
  dtype: Any | None = None
  param_dtype: Any = jnp.float32
  kernel_init: Initializer | None = None
  recurrent_kernel_init: Initializer | None = None
  bias_init: Initializer | None = None
  unroll: int | None = None
  remat: bool = False
  checkpoint_every: int = 0
  hoist_input_projection: bool | None = None
  fused_backward: bool | None = None

  def __post_init__(self):
    super().__post_init__()
    self.config  # noqa: B018  (validates the hyper-parameters at construction)

  @nn.compact
  def __call__(
    self,
    inputs: Array,
    seq_lengths: Array | None = None,
    initial_carry: Carry | None = None,
    *,
    deterministic: bool = True,
  ) -> tuple[Array, Carry]:
    """Returns ``(outputs, final_carry)``.

    Args:
      inputs: ``[*batch, T, F]``, or ``[T, *batch, F]`` when ``time_major``.
      seq_lengths: integers ``[*batch]`` in ``[0, T]``; ``None`` means all ``T``.
      initial_carry: shaped like ``final_carry``; ``None`` means zeros.
      deterministic: if False, apply dropout between layers (``'dropout'`` rng).

    Returns:
      outputs: the last layer's output at every step, ``[*batch, T, D*H_out]``
        (time-major ``[T, *batch, D*H_out]``), forward half first; exact zeros
        at ``t >= seq_lengths``.
      final_carry: the state of every layer and direction after its last valid
        step, ``[L*D, *batch, H_out]``, row ``layer*D + direction``. For LSTM an
        [`LSTMState`][jaxrnn.LSTMState] ``(h, c)`` with ``c: [L*D, *batch, H]``,
        which unpacks like PyTorch's ``(h_n, c_n)``.
    """
    config = self.config
    _, _, _, in_features = check_inputs(inputs, config.time_major)
    name = config.param_names[0]
    if self.has_variable('params', name):  # before Flax's own, less clear shape error
      w_ih = self.get_variable('params', name)['w_ih']
      check_features(in_features, w_ih.shape[0], f"params['{name}']['w_ih'] {list(w_ih.shape)}")
    initializers = weight_initializers(
      self.hidden_size, self.kernel_init, self.recurrent_kernel_init, self.bias_init
    )
    params = [
      _CellWeights(
        shapes=config.weight_shapes(row // config.num_directions, in_features),
        initializers=initializers,
        param_dtype=self.param_dtype,
        name=name,
      )()
      for row, name in enumerate(config.param_names)
    ]
    rng = None
    if not deterministic and config.dropout > 0 and config.num_layers > 1:
      rng = self.make_rng('dropout')
    return apply_layers(
      config,
      params,
      inputs,
      seq_lengths,
      initial_carry,
      dtype=self.dtype,
      dropout_rng=rng,
      deterministic=deterministic,
    )

  def step(self, x_t: Array, carry: Carry | None = None) -> tuple[Array, Carry]:
    """Returns ``(y_t, new_carry)`` of one time step, with the sequence call's parameters.

    Use it as ``layer.apply(variables, x_t, carry, method='step')``; stepping
    through a sequence reproduces the sequence call. Unidirectional layers only.

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
    if not self.has_variable('params', config.param_names[0]):
      raise ValueError(
        '`step` needs initialized parameters: pass the variables of `layer.init(key, inputs)`.'
      )
    params = [CellParams(**self.get_variable('params', name)) for name in config.param_names]
    return step_layers(config, params, x_t, carry, dtype=self.dtype)


class RNN(_RecurrentLayer):
  """Elman RNN layer, like ``torch.nn.RNN``: ``h' = act(x w_ih + b_ih + h w_hh + b_hh)``.

  Attributes:
    hidden_size: ``H``.
    num_layers: ``L``; layer ``k > 0`` reads the ``D*H`` outputs of layer ``k-1``.
    bidirectional: run a backward direction too (``D = 2``).
    time_major: inputs and outputs are ``[T, *batch, ...]`` instead of
      ``[*batch, T, ...]``; never changes the carry layout.
    dropout: dropout rate on the outputs of every layer but the last.
    use_bias: add ``b_ih`` and ``b_hh``.
    dtype: compute dtype (``None``: promote inputs and parameters).
    param_dtype: dtype of the parameters.
    kernel_init, recurrent_kernel_init, bias_init: initializers of ``w_ih``,
      ``w_hh`` and the biases; ``None`` is PyTorch's ``U(-1/sqrt(H), 1/sqrt(H))``.
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

  nonlinearity: str = 'tanh'
  cell_family: ClassVar[str] = 'rnn'


class LSTM(_RecurrentLayer):
  """LSTM layer, like ``torch.nn.LSTM`` (gates ``i, f, g, o``, optional projection).

  Attributes are those of [`RNN`][jaxrnn.RNN] (without ``nonlinearity``) plus
  ``proj_size``: ``P``, project ``h`` to ``P < H`` features with ``w_hr [H, P]``
  (initialized with ``kernel_init``); ``0`` means no projection.

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

  proj_size: int = 0
  cell_family: ClassVar[str] = 'lstm'


class GRU(_RecurrentLayer):
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

  cell_family: ClassVar[str] = 'gru'
