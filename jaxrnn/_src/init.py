"""Parameter initializers (``(key, shape, dtype) -> Array``, as in ``jax.nn.initializers``).

The built-in PyTorch cells store their gates side by side in one fused kernel
(``w_ih [F, G*H]``, ``w_hh [H_out, G*H]``). Flax's cells hold one ``Dense`` per
gate, so Flax's ``orthogonal()`` makes each ``[H, H]`` gate block orthogonal;
``per_gate`` does the same on a fused kernel. Keras, like jaxrnn, stores fused
kernels and initializes each as a whole. A cell's ``init_scheme`` names one of
the three sets of defaults (``scheme_initializers``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp

Initializer = Callable[..., jax.Array]

INIT_SCHEMES = ('pytorch', 'flax', 'keras')


def torch_uniform(hidden_size: int) -> Initializer:
  """Returns PyTorch's default RNN initializer ``U(-1/sqrt(H), 1/sqrt(H))``.

  PyTorch uses it for every weight and bias of ``nn.RNN``, ``nn.LSTM`` and
  ``nn.GRU``, projection included.

  Examples:
    >>> import jax
    >>> from jaxrnn import torch_uniform
    >>> w = torch_uniform(16)(jax.random.key(0), (8, 64))
    >>> bool(abs(w).max() <= 0.25)
    True
  """
  if isinstance(hidden_size, bool) or not isinstance(hidden_size, int) or hidden_size < 1:
    raise ValueError(f'`hidden_size` must be a positive int (the bound is 1/sqrt(H)), got {hidden_size!r}.')
  bound = 1.0 / math.sqrt(hidden_size)

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, minval=-bound, maxval=bound)

  return init


@dataclasses.dataclass(frozen=True)
class _PerGate:
  """``initializer`` applied to each of ``num_gates`` blocks of the last axis (see ``per_gate``)."""

  initializer: Initializer
  num_gates: int

  def __call__(self, key: jax.Array, shape, dtype=jnp.float32) -> jax.Array:
    shape = tuple(shape)
    if not shape or shape[-1] % self.num_gates:
      raise ValueError(
        f'per_gate(..., num_gates={self.num_gates}) splits the last axis into {self.num_gates} equal '
        f'blocks, but got shape {shape}: its last axis must be a multiple of {self.num_gates}.'
      )
    block = (*shape[:-1], shape[-1] // self.num_gates)
    keys = jax.random.split(key, self.num_gates)
    return jnp.concatenate([self.initializer(k, block, dtype) for k in keys], axis=-1)


def per_gate(initializer: Initializer, num_gates: int) -> Initializer:
  """Returns an initializer that fills each gate block of a fused ``[..., G*H]`` array separately.

  The last axis is split into ``G = num_gates`` blocks of ``H``; block ``g``
  (columns ``g*H`` to ``(g+1)*H``) is ``initializer(key_g, [..., H], dtype)``
  with its own key (``jax.random.split(key, G)``). On ``w_hh [H, G*H]`` with
  ``jax.nn.initializers.orthogonal()`` every ``[H, H]`` gate block is
  orthogonal, as in Flax's cells, which hold one kernel per gate; on
  ``w_ih [F, G*H]`` fans are computed from ``[F, H]``; on a bias ``[G*H]``
  each ``[H]`` block is drawn apart. Gates are ordered as PyTorch's (LSTM
  ``i, f, g, o``; GRU ``r, z, n``): ``G`` is 1, 3 or 4 for
  [`ElmanCell`][jaxrnn.ElmanCell], [`GRUCell`][jaxrnn.GRUCell],
  [`LSTMCell`][jaxrnn.LSTMCell].

  Args:
    initializer: any ``(key, shape, dtype) -> Array``, e.g. from
      ``jax.nn.initializers``.
    num_gates: ``G``; the last axis of the shape must be a multiple of it.

  Returns:
    An initializer ``(key, shape, dtype=float32) -> Array`` of ``shape``.
    It is hashable and compares equal to ``per_gate`` of the same
    ``initializer`` object and ``G``.

  Examples:
    >>> import jax, jax.numpy as jnp, jaxrnn
    >>> init = jaxrnn.per_gate(jax.nn.initializers.orthogonal(), 4)
    >>> w_hh = init(jax.random.key(0), (8, 32))  # [H, 4H]
    >>> i_block = w_hh[:, :8]  # the input gate's [H, H] block
    >>> bool(jnp.allclose(i_block.T @ i_block, jnp.eye(8), atol=1e-5))
    True
    >>> layer = jaxrnn.LSTM(8, recurrent_kernel_init=init)
  """
  if isinstance(num_gates, bool) or not isinstance(num_gates, int) or num_gates < 1:
    raise ValueError(f'`num_gates` must be a positive int, got {num_gates!r}.')
  if not callable(initializer):
    raise TypeError(f'`initializer` must be callable (key, shape, dtype), got {type(initializer).__name__}.')
  return _PerGate(initializer, num_gates)


def _unit_forget_bias(key: jax.Array, shape, dtype=jnp.float32) -> jax.Array:
  """Keras's ``unit_forget_bias``: zeros, with ones in the LSTM's forget block (the second of four)."""
  del key
  hidden_size = shape[-1] // 4
  return jnp.zeros(shape, dtype).at[..., hidden_size : 2 * hidden_size].set(1)


# Created once, so that the scheme's initializers compare equal between calls.
_lecun_normal = jax.nn.initializers.lecun_normal()
_glorot_uniform = jax.nn.initializers.glorot_uniform()
_orthogonal_qr = jax.nn.initializers.orthogonal()
_zeros = jax.nn.initializers.zeros


def _orthogonal(key: jax.Array, shape, dtype=jnp.float32) -> jax.Array:
  """``jax.nn.initializers.orthogonal()``, computed in at least float32: the CPU's QR has no bfloat16."""
  return _orthogonal_qr(key, shape, jnp.promote_types(dtype, jnp.float32)).astype(dtype)


def check_init_scheme(init_scheme) -> None:
  """Raises a ``ValueError`` naming ``init_scheme`` if it is not one of ``INIT_SCHEMES``."""
  if not isinstance(init_scheme, str) or init_scheme not in INIT_SCHEMES:
    raise ValueError(f'`init_scheme` must be one of {list(INIT_SCHEMES)}, got {init_scheme!r}.')


def scheme_initializers(init_scheme: str, hidden_size: int, num_gates: int, *, lstm: bool) -> dict:
  """Returns the initializer of each weight name under ``init_scheme``.

  - ``'pytorch'``: ``U(-1/sqrt(H), 1/sqrt(H))`` for every weight and bias.
  - ``'flax'``: Flax's ``nn.SimpleCell``/``nn.GRUCell``/``nn.LSTMCell``:
    ``lecun_normal`` per gate block of ``w_ih``, ``orthogonal`` per
    ``[H_out, H]`` gate block of ``w_hh``, zero biases; ``w_hr`` (which Flax
    lacks) ``lecun_normal``.
  - ``'keras'``: Keras's ``SimpleRNN``/``GRU``/``LSTM``: ``glorot_uniform`` on
    the fused ``w_ih [F, G*H]`` and ``orthogonal`` on the fused
    ``w_hh [H_out, G*H]`` (orthonormal rows), both as a whole as Keras does;
    zero biases, except ``unit_forget_bias`` for LSTM: Keras's one bias is
    ``b_ih + b_hh`` here, so the forget block of ``b_ih`` is 1 and ``b_hh = 0``;
    ``w_hr`` ``glorot_uniform``.
  """
  check_init_scheme(init_scheme)
  if init_scheme == 'pytorch':
    default = torch_uniform(hidden_size)
    return dict.fromkeys(('w_ih', 'w_hh', 'b_ih', 'b_hh', 'w_hr'), default)
  if init_scheme == 'flax':
    return {
      'w_ih': per_gate(_lecun_normal, num_gates),
      'w_hh': per_gate(_orthogonal, num_gates),
      'b_ih': _zeros,
      'b_hh': _zeros,
      'w_hr': _lecun_normal,
    }
  return {
    'w_ih': _glorot_uniform,
    'w_hh': _orthogonal,
    'b_ih': _unit_forget_bias if lstm else _zeros,
    'b_hh': _zeros,
    'w_hr': _glorot_uniform,
  }


def weight_initializers(
  hidden_size: int,
  kernel_init=None,
  recurrent_kernel_init=None,
  bias_init=None,
  *,
  init_scheme: str = 'pytorch',
  num_gates: int = 1,
  lstm: bool = False,
) -> dict:
  """Returns the initializer of each weight name; ``None`` means ``init_scheme``'s.

  ``kernel_init`` initializes ``w_ih`` and the LSTM projection ``w_hr``,
  ``recurrent_kernel_init`` ``w_hh``, ``bias_init`` ``b_ih`` and ``b_hh``;
  each one given replaces the scheme's for those weights.
  """
  initializers = scheme_initializers(init_scheme, hidden_size, num_gates, lstm=lstm)
  if kernel_init is not None:
    initializers.update(w_ih=kernel_init, w_hr=kernel_init)
  if recurrent_kernel_init is not None:
    initializers['w_hh'] = recurrent_kernel_init
  if bias_init is not None:
    initializers.update(b_ih=bias_init, b_hh=bias_init)
  return initializers
