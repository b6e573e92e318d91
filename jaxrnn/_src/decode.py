"""Autoregressive decoding under ``jax.lax.scan``: one compiled loop, no Python loop per token."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxrnn._src.config import _check_int
from jaxrnn._src.types import Array


def _describe(tree) -> str:
  return str(jax.tree.map(lambda a: f'{jnp.dtype(a.dtype).name}{list(np.shape(a))}', tree))


def _check_step_output(out, carry, tokens):
  """Returns ``(logits, new_carry)`` from ``step_fn``'s output, or raises naming what is wrong."""
  expected = (
    f'`step_fn(carry, tokens)` must return (logits [*batch, V] = {list(tokens.shape)} + [V], new_carry '
    f'shaped like carry {_describe(carry)})'
  )
  if not isinstance(out, (tuple, list)) or len(out) != 2:
    raise TypeError(f'{expected}, got {type(out).__name__}.')
  logits, new_carry = out

  def is_logits(a):
    return hasattr(a, 'shape') and a.ndim == tokens.ndim + 1 and tuple(a.shape[:-1]) == tuple(tokens.shape)

  def like_carry(tree):
    return jax.tree.structure(tree) == jax.tree.structure(carry) and all(
      np.shape(a) == np.shape(b) for a, b in zip(jax.tree.leaves(tree), jax.tree.leaves(carry), strict=True)
    )

  if is_logits(logits) and jnp.issubdtype(logits.dtype, jnp.floating) and like_carry(new_carry):
    return logits, new_carry
  hint = ''
  if is_logits(new_carry) and like_carry(logits):
    hint = ' It looks like (new_carry, logits): return the logits first, as `layer.step` returns (y, carry).'
  raise TypeError(f'{expected}, got ({_describe(logits)}, {_describe(new_carry)}).{hint}')


def generate(
  step_fn: Callable[[object, Array], tuple[Array, object]],
  carry: Any,
  first_tokens: Array,
  num_steps: int,
  key: Array | None = None,
  *,
  temperature: float | Array = 0.0,
) -> tuple[Array, Any]:
  """Returns ``(tokens, final_carry)``: ``num_steps`` tokens generated after ``first_tokens``.

  Each step feeds the previous token to ``step_fn`` and picks the next one from
  the logits: the argmax when ``temperature == 0`` (greedy), else a sample from
  ``softmax(logits / temperature)``. ``temperature`` may be traced, so changing
  it does not recompile; a traced temperature needs a ``key`` (it may be
  positive), and a traced negative temperature, which cannot be checked under
  jit, decodes greedily.

  Args:
    step_fn: ``(carry, tokens [*batch]) -> (logits [*batch, V], new_carry)``,
      e.g. an embedding, ``layer.step`` and a Dense head.
    carry: the state after the prompt, e.g. a sequence call's ``final_carry``.
    first_tokens: integers ``[*batch]``, the last token of each prompt (or the
      first generated one).
    num_steps: number of tokens to generate (a static int ``>= 0``).
    key: PRNG key for sampling; required when ``temperature > 0`` or traced,
      optional (unused) for greedy decoding.
    temperature: ``>= 0``; ``0`` for greedy decoding.

  Returns:
    tokens: ``[*batch, num_steps]``, the generated tokens (``first_tokens``
      not included).
    final_carry: the carry after the last step.

  Raises:
    TypeError: ``num_steps`` is not an int (or is traced); ``step_fn`` does not
      return ``(logits [*batch, V], new_carry)`` with ``new_carry`` shaped like
      ``carry`` (e.g. the two in the other order).
    ValueError: ``num_steps < 0``; a concrete ``temperature < 0``; no ``key``
      while ``temperature > 0`` or traced.

  Examples:
    >>> import jax, jax.numpy as jnp, jaxrnn
    >>> def count_up(carry, tokens):  # logits favour token + 1
    ...   return jax.nn.one_hot(tokens + 1, 10) * 5.0, carry + 1
    >>> tokens, steps = jaxrnn.generate(count_up, 0, jnp.array([0, 4]), 3)
    >>> tokens, steps
    (Array([[1, 2, 3],
           [5, 6, 7]], dtype=int32), Array(3, dtype=int32, weak_type=True))
  """
  if isinstance(num_steps, jax.core.Tracer):
    raise TypeError(
      f'`num_steps` must be a static int (it is the length of the loop), got a traced value {num_steps}; '
      'mark it static, e.g. jax.jit(..., static_argnames=...).'
    )
  _check_int('num_steps', num_steps, 0)
  if isinstance(temperature, jax.core.Tracer):
    if key is None:
      raise ValueError(
        '`key` is required when `temperature` is traced (it may be > 0, which samples), got key=None; '
        'pass a PRNG key, or a concrete temperature=0 for greedy decoding.'
      )
  else:
    values = np.asarray(temperature)
    if not np.all(values >= 0):
      raise ValueError(f'`temperature` must be >= 0 (0 for greedy decoding), got {values.tolist()}.')
    if key is None and np.any(values > 0):
      raise ValueError(
        f'`key` is required to sample with temperature={values.tolist()}, got key=None; pass a PRNG key '
        '(e.g. jax.random.key(0)), or temperature=0 for greedy decoding.'
      )
  if key is None:
    key = jax.random.key(0)  # greedy: the key is never used
  first_tokens = jnp.asarray(first_tokens)
  temperature = jnp.asarray(temperature, jnp.float32)

  def body(state, step_key):
    carry, tokens = state
    logits, carry = _check_step_output(step_fn(carry, tokens), carry, tokens)
    greedy = jnp.argmax(logits, axis=-1).astype(tokens.dtype)
    scaled = logits.astype(jnp.float32) / jnp.maximum(temperature, 1e-6)
    sampled = jax.random.categorical(step_key, scaled, axis=-1).astype(tokens.dtype)
    tokens = jnp.where(temperature > 0, sampled, greedy)
    return (carry, tokens), tokens

  (carry, _), tokens = jax.lax.scan(body, (carry, first_tokens), jax.random.split(key, num_steps))
  return jnp.moveaxis(tokens, 0, -1), carry
