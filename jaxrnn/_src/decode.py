"""Autoregressive decoding under ``jax.lax.scan``: one compiled loop, no Python loop per token."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxrnn._src.config import _check_int
from jaxrnn._src.types import Array


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
    TypeError: ``num_steps`` is not an int (or is traced).
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
    logits, carry = step_fn(carry, tokens)
    greedy = jnp.argmax(logits, axis=-1).astype(tokens.dtype)
    scaled = logits.astype(jnp.float32) / jnp.maximum(temperature, 1e-6)
    sampled = jax.random.categorical(step_key, scaled, axis=-1).astype(tokens.dtype)
    tokens = jnp.where(temperature > 0, sampled, greedy)
    return (carry, tokens), tokens

  (carry, _), tokens = jax.lax.scan(body, (carry, first_tokens), jax.random.split(key, num_steps))
  return jnp.moveaxis(tokens, 0, -1), carry
