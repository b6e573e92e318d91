"""Autoregressive decoding under ``jax.lax.scan``: one compiled loop, no Python loop per token.

Every step function in jaxrnn takes ``(input, carry)`` and returns ``(output, new_carry)``, like
``layer.step(x, carry)``; ``generate``'s ``step_fn(tokens, carry) -> (logits, new_carry)`` too.
"""

from __future__ import annotations

import inspect
import weakref
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxrnn._src.config import _check_int
from jaxrnn._src.config import check_bool
from jaxrnn._src.types import Array


def _describe(tree) -> str:
  return str(jax.tree.map(lambda a: f'{jnp.dtype(a.dtype).name}{list(np.shape(a))}', tree))


def _is_logits(a, tokens) -> bool:
  return (
    hasattr(a, 'shape') and len(a.shape) == tokens.ndim + 1 and tuple(a.shape[:-1]) == tuple(tokens.shape)
  )


def _is_like_carry(tree, carry) -> bool:
  return jax.tree.structure(tree) == jax.tree.structure(carry) and all(
    np.shape(a) == np.shape(b) for a, b in zip(jax.tree.leaves(tree), jax.tree.leaves(carry), strict=True)
  )


def _is_step_output(out, tokens, carry) -> bool:
  """Whether ``out`` is ``(logits [*batch, V] floating, new_carry shaped like carry)``."""
  if not isinstance(out, (tuple, list)) or len(out) != 2:
    return False
  logits, new_carry = out
  return (
    _is_logits(logits, tokens)
    and jnp.issubdtype(logits.dtype, jnp.floating)
    and _is_like_carry(new_carry, carry)
  )


def _takes_carry_first(step_fn, tokens, carry) -> bool:
  """Whether ``step_fn(carry, tokens)`` (the order of jaxrnn 0.1) traces to a valid step output.

  Only asked once the documented order has failed, so a correct ``step_fn`` is traced once.
  """
  try:
    out = jax.eval_shape(step_fn, carry, tokens)
  except Exception:  # any failure means "no evidence of the old order"
    return False
  return _is_step_output(out, tokens, carry)


_OLD_ORDER_HINT = (
  ' It looks like `step_fn(carry, tokens)`, the order of jaxrnn 0.1: every step function in jaxrnn '
  'takes (input, carry) and returns (output, new_carry), like `layer.step(x, carry)`; swap its arguments.'
)


def _call_step(step_fn, tokens, carry):
  """Returns ``(logits, new_carry)`` of ``step_fn(tokens, carry)``, or raises naming what is wrong."""
  expected = (
    f'`step_fn(tokens, carry)` must return (logits [*batch, V] = {list(tokens.shape)} + [V], new_carry '
    f'shaped like carry {_describe(carry)})'
  )
  try:
    out = step_fn(tokens, carry)
  except Exception as error:
    if _takes_carry_first(step_fn, tokens, carry):
      raise TypeError(f'`step_fn(tokens, carry)` raised {type(error).__name__}.{_OLD_ORDER_HINT}') from error
    raise
  if _is_step_output(out, tokens, carry):
    return out
  if not isinstance(out, (tuple, list)) or len(out) != 2:
    got = type(out).__name__
  else:
    got = f'({_describe(out[0])}, {_describe(out[1])})'
  hint = ''
  if (
    isinstance(out, (tuple, list))
    and len(out) == 2
    and _is_logits(out[1], tokens)
    and _is_like_carry(out[0], carry)
  ):
    hint = ' It looks like (new_carry, logits): return the logits first, as `layer.step` returns (y, carry).'
  elif _takes_carry_first(step_fn, tokens, carry):
    hint = _OLD_ORDER_HINT
  raise TypeError(f'{expected}, got {got}.{hint}')


def generate(
  step_fn: Callable[[Array, Any], tuple[Array, Any]],
  carry: Any,
  first_tokens: Array,
  num_steps: int,
  key: Array | None = None,
  *,
  temperature: float | Array = 0.0,
  return_logits: bool = False,
) -> tuple[Array, Any] | tuple[Array, Array, Any]:
  """Returns ``(tokens, final_carry)``, or ``(tokens, logits, final_carry)`` with ``return_logits``.

  Generates ``num_steps`` tokens after ``first_tokens``: each step feeds the
  previous token to ``step_fn`` and picks the next one from the logits: the
  argmax when ``temperature == 0`` (greedy), else a sample from
  ``softmax(logits / temperature)`` drawn with ``jax.random.split(key,
  num_steps)[t]`` at step ``t``. ``temperature`` may be traced, so changing it
  does not recompile; a traced temperature needs a ``key`` (it may be
  positive), and a traced negative temperature, which cannot be checked under
  jit, decodes greedily.

  Like every step function in jaxrnn (``layer.step(x, carry)``), ``step_fn``
  takes the input first and the carry second, and returns the output first.

  Called outside ``jax.jit``, the decoding loop is compiled once per
  ``step_fn`` object (``==`` for a bound method), input shapes and dtypes,
  ``num_steps`` and ``return_logits``: each call traces ``step_fn`` once, and
  the arrays it closes over are read afresh as arguments of the compiled loop,
  so new parameter values never recompile nor go stale. A new ``lambda`` or
  ``functools.partial`` per call is a new ``step_fn``: it compiles again.

  Args:
    step_fn: ``(tokens [*batch], carry) -> (logits [*batch, V], new_carry)``,
      e.g. an embedding, ``layer.step`` and a Dense head.
    carry: the state after the prompt, e.g. a sequence call's ``final_carry``.
    first_tokens: integers ``[*batch]``, the last token of each prompt (or the
      first generated one).
    num_steps: number of tokens to generate (a static int ``>= 0``).
    key: PRNG key for sampling; required when ``temperature > 0`` or traced,
      optional (unused) for greedy decoding.
    temperature: ``>= 0``; ``0`` for greedy decoding.
    return_logits: also return every step's logits (a static bool). Off by
      default: stacked, they hold ``num_steps * V`` values per sequence.

  Returns:
    tokens: ``[*batch, num_steps]``, the generated tokens (``first_tokens``
      not included).
    logits: only with ``return_logits=True``: ``[*batch, num_steps, V]``,
      ``step_fn``'s output (its dtype) at every step, before the temperature:
      ``tokens[..., t]`` is ``argmax(logits[..., t, :])`` when greedy, else
      drawn from ``softmax(logits[..., t, :] / temperature)``. The logits that
      chose ``first_tokens`` are the caller's, not included.
    final_carry: the carry after the last step.

  Raises:
    TypeError: ``num_steps`` is not an int (or is traced); ``return_logits``
      is not True or False; ``step_fn`` does not return ``(logits [*batch, V],
      new_carry)`` with ``new_carry`` shaped like ``carry`` (the message says
      when the two are in the other order), or evidently takes ``(carry,
      tokens)``, jaxrnn 0.1's order (detected when that order traces to valid
      outputs and the documented one does not).
    ValueError: ``num_steps < 0``; a concrete ``temperature < 0``; no ``key``
      while ``temperature > 0`` or traced.

  Examples:
    >>> import jax, jax.numpy as jnp, jaxrnn
    >>> def count_up(tokens, steps):  # logits favour token + 1
    ...   return jax.nn.one_hot(tokens + 1, 10) * 5.0, steps + 1
    >>> tokens, steps = jaxrnn.generate(count_up, 0, jnp.array([0, 4]), 3)
    >>> tokens, steps
    (Array([[1, 2, 3],
           [5, 6, 7]], dtype=int32), Array(3, dtype=int32, weak_type=True))
    >>> tokens, logits, steps = jaxrnn.generate(
    ...   count_up, 0, jnp.array([0, 4]), 3, return_logits=True)
    >>> logits.shape  # [*batch, num_steps, V]
    (2, 3, 10)
    >>> bool(jnp.all(jnp.argmax(logits, -1) == tokens))
    True
  """
  if isinstance(num_steps, jax.core.Tracer):
    raise TypeError(
      f'`num_steps` must be a static int (it is the length of the loop), got a traced value {num_steps}; '
      'mark it static, e.g. jax.jit(..., static_argnames=...).'
    )
  _check_int('num_steps', num_steps, 0)
  check_bool('return_logits', return_logits)
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
  arrays = (carry, first_tokens, key, temperature)
  if not any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(arrays)):
    step, consts = _StepProgram.trace(step_fn, first_tokens, carry)
    if not any(isinstance(const, jax.core.Tracer) for const in consts):
      return _decode_eagerly(step, num_steps, return_logits, consts, *arrays)
  return _decode(
    lambda consts, tokens, carry: _call_step(step_fn, tokens, carry), num_steps, return_logits, (), *arrays
  )


def _decode(step, num_steps, return_logits, consts, carry, first_tokens, key, temperature):
  """The loop of ``generate`` after its checks; ``step(consts, tokens, carry) -> (logits, new_carry)``."""

  def body(state, step_key):
    carry, tokens = state
    logits, carry = step(consts, tokens, carry)
    greedy = jnp.argmax(logits, axis=-1).astype(tokens.dtype)
    scaled = logits.astype(jnp.float32) / jnp.maximum(temperature, 1e-6)
    sampled = jax.random.categorical(step_key, scaled, axis=-1).astype(tokens.dtype)
    tokens = jnp.where(temperature > 0, sampled, greedy)
    # Without return_logits the scan stacks no logits at all, under jit or not.
    return (carry, tokens), ((tokens, logits) if return_logits else tokens)

  (carry, _), stacked = jax.lax.scan(body, (carry, first_tokens), jax.random.split(key, num_steps))
  if not return_logits:
    return jnp.moveaxis(stacked, 0, -1), carry
  tokens, logits = stacked
  return jnp.moveaxis(tokens, 0, -1), jnp.moveaxis(logits, 0, -2), carry


class _StepProgram:
  """``step_fn`` traced once for given tokens and carry: a jaxpr whose closed-over arrays are arguments.

  Equal programs (same ``step_fn`` object, or an equal one such as the same bound method, same input
  shapes and dtypes, same jaxpr text) share one compiled loop in ``_decode_eagerly``. The arrays
  ``step_fn`` closes over (parameters of a closure or bound method) are not part of the key but
  arguments of the loop, read afresh at every call, so a repeated call never reuses stale values;
  Python values it closes over appear in the jaxpr's text, so changing them recompiles.
  """

  def __init__(self, step_fn, jaxpr, in_avals, out_tree):
    self.jaxpr = jaxpr
    self.out_tree = out_tree
    self._key = (_Hashable(step_fn), in_avals, out_tree, str(jaxpr))

  @classmethod
  def trace(cls, step_fn, tokens, carry) -> tuple[_StepProgram, list]:
    """Returns the program of ``step_fn(tokens, carry)`` and the arrays it closes over (checked outputs)."""
    closed, out_shape = jax.make_jaxpr(lambda t, c: _call_step(step_fn, t, c), return_shape=True)(
      tokens, carry
    )
    # weak_type is not in the jaxpr's text
    in_avals = (jax.tree.structure((tokens, carry)), tuple(var.aval for var in closed.jaxpr.invars))
    return cls(step_fn, closed.jaxpr, in_avals, jax.tree.structure(out_shape)), closed.consts

  def __call__(self, consts, tokens, carry):
    out = jax.core.eval_jaxpr(self.jaxpr, consts, *jax.tree.leaves((tokens, carry)))
    return jax.tree.unflatten(self.out_tree, out)

  def __hash__(self):
    return hash(self._key)

  def __eq__(self, other):
    return isinstance(other, _StepProgram) and self._key == other._key


class _Hashable:
  """``fn`` compared by ``==`` where it is hashable (a bound method: its object and function), else by
  identity; held by a weak reference where it can be, so that the compiled loops cached under it do
  not keep a model (and its parameters) alive."""

  def __init__(self, fn):
    try:
      self._hash = hash(fn)
      self._by_identity = False
    except TypeError:
      self._hash = id(fn)
      self._by_identity = True
    try:
      self._ref = weakref.WeakMethod(fn) if inspect.ismethod(fn) else weakref.ref(fn)
    except TypeError:  # no weak references to it: held strongly
      self._ref = lambda: fn

  def __hash__(self):
    return self._hash

  def __eq__(self, other):
    if not isinstance(other, _Hashable):
      return False
    mine, theirs = self._ref(), other._ref()
    if mine is None or theirs is None:  # a collected step function equals nothing
      return False
    if self._by_identity or other._by_identity:
      return mine is theirs
    return mine == theirs


# Called eagerly (a notebook), every call traced and compiled the decoding loop anew: 0.8-1.5 s.
# Keyed on the traced step program (see _StepProgram) and the static arguments, a repeated eager
# call compiles nothing. Only for concrete arguments, as compose._run_checked_eagerly: under a
# transformation the loop stays part of the caller's program.
_decode_eagerly = jax.jit(_decode, static_argnums=(0, 1, 2))
