"""Autoregressive decoding under ``jax.lax.scan``: one compiled loop, no Python loop per token."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

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
  it does not recompile.

  Args:
    step_fn: ``(carry, tokens [*batch]) -> (logits [*batch, V], new_carry)``,
      e.g. an embedding, ``layer.step`` and a Dense head.
    carry: the state after the prompt, e.g. a sequence call's ``final_carry``.
    first_tokens: integers ``[*batch]``, the last token of each prompt (or the
      first generated one).
    num_steps: number of tokens to generate (static).
    key: PRNG key for sampling; required when ``temperature > 0``.
    temperature: ``0`` for greedy decoding.

  Returns:
    ``tokens: [*batch, num_steps]`` and the carry after the last step.

  Examples:
    >>> import jax, jax.numpy as jnp, jaxrnn
    >>> def count_up(carry, tokens):  # logits favour token + 1
    ...   return jax.nn.one_hot(tokens + 1, 10) * 5.0, carry + 1
    >>> tokens, steps = jaxrnn.generate(count_up, 0, jnp.array([0, 4]), 3)
    >>> tokens, steps
    (Array([[1, 2, 3],
           [5, 6, 7]], dtype=int32), Array(3, dtype=int32, weak_type=True))
  """
  if key is None:
    key = jax.random.key(0)  # only used when sampling
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
