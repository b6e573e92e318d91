"""The fused backward pass: ``scan_layer``'s loop with a hand-written gradient.

``fused_scan_layer`` computes what ``scan.scan_layer`` computes, through the same
length-0 handling and checkpointed chunks (``scan.with_empty_sequences``,
``scan.in_chunks``). Only the loop inside differs: ``_fused_loop`` is a
``jax.custom_vjp`` whose two halves are

- ``_fused_loop_forward``: the masked loop, each step also storing the
  coefficients of its pointwise part's gradient (``CellKind.linearize``), handed
  to the backward pass in ``FusedResiduals``;
- ``_fused_loop_backward``: one reversed loop over those coefficients, then the
  weight, bias and input gradients over all steps at once (how and why:
  ``fused_scan_layer``'s docstring).

What stays fixed for one loop (the cell, the flags) is a ``FusedLoopConfig``, the
``custom_vjp``'s non-differentiable first argument. The bfloat16 details of the
loops and matmuls (``uint16`` scans, materialised transposes) are in ``xla_cpu.py``.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxrnn._src import pallas_loop
from jaxrnn._src import xla_cpu
from jaxrnn._src.cells import CellKind
from jaxrnn._src.cells import matmul
from jaxrnn._src.cells import project_input
from jaxrnn._src.cells import recurrent_sum
from jaxrnn._src.cells import upcast
from jaxrnn._src.scan import in_chunks
from jaxrnn._src.scan import masked_update
from jaxrnn._src.scan import packed_state
from jaxrnn._src.scan import with_empty_sequences
from jaxrnn._src.segments import Segments
from jaxrnn._src.segments import add_at_starts
from jaxrnn._src.segments import record
from jaxrnn._src.segments import recorded_slots
from jaxrnn._src.segments import reset
from jaxrnn._src.segments import segment_steps
from jaxrnn._src.segments import select_slots
from jaxrnn._src.segments import select_steps
from jaxrnn._src.segments import to_leaf
from jaxrnn._src.types import Array
from jaxrnn._src.types import Carry
from jaxrnn._src.types import CellParams


def fused_scan_layer(
  kind: CellKind,
  params: CellParams,
  carry: Carry,
  xs: Array,
  seq_lengths: Array | None = None,
  *,
  segment_ids: Array | None = None,
  num_segments: int | None = None,
  reverse: bool = False,
  hoist_input_projection: bool = False,
  unroll: int = 1,
  checkpoint_every: int = 0,
  pallas: bool = False,
) -> tuple[Carry, Array]:
  """``scan_layer`` of ``kind``'s cell with a hand-written backward pass.

  Same arguments and results as ``scan_layer(kind.recurrence, ...)`` for
  ``xs: [T, B, F]``, and the same values; only the gradient is computed
  differently (``jax.custom_vjp``), so forward-mode differentiation
  (``jax.jvp``) is not available. Not for LSTM with a projection.

  The forward loop stores, per step, the coefficients of the pointwise part's
  gradient (``kind.linearize``: products of gate activations, linear in the
  cotangents), in the compute dtype. The backward loop multiplies the
  cotangents by them (no transcendental functions) and does one
  ``[B, G*H] x [G*H, H_out]`` matmul per step; ``dw_hh``, ``dw_ih``, the
  biases and the input gradient are then one matmul (or sum) each over all
  ``T*B`` rows, with the hidden states read back from the outputs.

  With ``segment_ids`` (packed sequences, ``carry`` leaves ``[B, S, ...]``,
  or ``[B, ...]`` shared with ``num_segments``)
  the loops reset and record as ``scan_layer``'s: the backward loop adds the
  final carries' cotangents at each sequence's last step and hands the
  carry's cotangent to the initial carries at its first.

  With ``pallas`` the forward and backward loops are one Pallas kernel each
  (``pallas_loop.py``; the projection is then always hoisted, and packed
  sequences are not supported).
  """
  if pallas and segment_ids is not None:
    raise ValueError("`loop='pallas'` does not run packed sequences (`segment_ids`) yet; use `loop='scan'`.")
  if hoist_input_projection or pallas:
    xs = project_input(params, xs)  # one large matmul, differentiated by JAX
    params = params._replace(w_ih=None, b_ih=None)
  if segment_ids is not None:
    return _fused_packed(
      kind, params, carry, xs, segment_ids, num_segments, reverse, unroll, checkpoint_every
    )
  num_steps = xs.shape[0]
  given = seq_lengths
  # Without padding (no lengths, no padded last chunk) the loop skips the masks.
  masked = seq_lengths is not None or (0 < checkpoint_every < num_steps and num_steps % checkpoint_every)
  if seq_lengths is None:
    seq_lengths = jnp.full(xs.shape[1], num_steps)
  config = FusedLoopConfig(
    kind=kind,
    in_step=params.w_ih is not None,
    reverse=reverse,
    unroll=unroll,
    masked=bool(masked),
    pallas=pallas,
  )
  return with_empty_sequences(
    lambda carry: in_chunks(
      lambda carry, ts, xs: _fused_loop(config, params, carry, None, ts, xs, seq_lengths),
      carry,
      xs,
      checkpoint_every,
      reverse,
    ),
    carry,
    given,
  )


def refuse_forward_mode(*trees) -> None:
  """Raises a clear error under ``jax.jvp``/``jax.jacfwd``, which cannot go through a ``custom_vjp``.

  JAX's own message ("can't apply forward-mode autodiff (jvp) to a custom_vjp
  function") does not say which option to change. With direct linearization (the
  default since jax 0.5), reverse mode reaches the loop as ``LinearizeTracer`` and
  forward mode as ``JVPTracer``; ``jax.hessian`` (forward over reverse) is reverse
  mode here and works. Without direct linearization the two cannot be told apart,
  and JAX's message stands.
  """
  if not getattr(jax.config, 'jax_use_direct_linearize', False):
    return
  if any(type(leaf).__name__ == 'JVPTracer' for leaf in jax.tree.leaves(trees)):
    raise TypeError(
      'Forward-mode differentiation (jax.jvp, jax.jacfwd) cannot go through the fused backward pass '
      '(a jax.custom_vjp): build the layer with `fused_backward=False`. Reverse mode (jax.grad, '
      'jax.vjp) and jax.hessian work with either setting.'
    )


@dataclasses.dataclass(frozen=True, kw_only=True)
class FusedLoopConfig:
  """What stays fixed for one fused loop: static under ``jit``, hashable, no arrays.

  Attributes:
    kind: the cell.
    in_step: whether each step computes the input projection from ``xs: [T, B, F]``
      (``params.w_ih`` is set), or ``xs: [T, B, G*H]`` is already projected.
    reverse: run the steps from last to first (the backward direction).
    unroll: steps per loop iteration (``jax.lax.scan``'s ``unroll``).
    masked: apply the padding masks; False when no step is padding.
    packed: the mask is a ``Segments`` of packed sequences (the carry is
      ``(running, store)`` and each sequence starts from ``initial``), not
      ``seq_lengths``.
    pallas: the forward and backward loops are one Pallas kernel each
      (``pallas_loop.py``); not with ``packed`` or ``in_step``.
  """

  kind: CellKind
  in_step: bool
  reverse: bool
  unroll: int
  masked: bool
  packed: bool = False
  pallas: bool = False


class FusedResiduals(NamedTuple):
  """What the fused loop's forward pass keeps for its backward pass.

  ``T`` counts the steps of this loop: a chunk's ``k`` steps under ``checkpoint_every=k``.
  """

  params: CellParams  # the cell's parameters; w_ih and b_ih None when the projection is hoisted
  xs: Array  # [T, B, F] inputs, or [T, B, G*H] projected inputs when hoisted
  ys: Array  # [T, B, H] outputs, zeros at padded steps; also the hidden states for dw_hh
  h0: Array  # [B, H] the hidden part of the loop's initial carry
  coefficients: tuple[Array, ...]  # each [T, B, H] or [T, B, 1], in the compute dtype (kind.linearize)
  ts: Array  # [T] each step's index in the whole sequence; step t is padding where t >= seq_lengths
  mask: Array | Segments  # [B] valid steps per sequence (T when none were given), or packed sequences
  initial: Carry | None  # packed: each sequence's initial carry, leaves [B, S, ...]; else None


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _fused_loop(
  config: FusedLoopConfig, params: CellParams, carry: Carry, initial: Carry | None, ts: Array, xs: Array, mask
) -> tuple[Carry, Array]:
  """Returns ``(final_carry, ys)`` of the masked loop over ``ts: [T]`` and ``xs: [T, B, ...]``.

  ``mask`` is ``seq_lengths: [B]``, or with ``config.packed`` the ``Segments``
  (``carry`` is then ``(running, store)`` and ``initial`` the sequences'
  initial carries, leaves ``[B, S, ...]``).
  """
  return _run_forward(config, params, carry, initial, ts, xs, mask, residuals=False)


def _fused_loop_forward(
  config: FusedLoopConfig, params: CellParams, carry: Carry, initial: Carry | None, ts: Array, xs: Array, mask
) -> tuple[tuple[Carry, Array], FusedResiduals]:
  """Returns ``_fused_loop``'s results and the residuals its backward pass reads."""
  final, (ys, coefficients) = _run_forward(config, params, carry, initial, ts, xs, mask, residuals=True)
  running = carry[0] if config.packed else carry
  h0 = config.kind.hidden(running)
  return (final, ys), FusedResiduals(params, xs, ys, h0, coefficients, ts, mask, initial)


def _fused_loop_backward(config: FusedLoopConfig, residuals: FusedResiduals, cotangents: tuple[Carry, Array]):
  """Returns the cotangents of ``(params, carry, initial, ts, xs, mask)`` from those of ``(final_carry, ys)``."""
  kind = config.kind
  params, xs, ys, h0, coefficients, ts, mask, initial = residuals
  d_final, d_ys = cotangents
  w_hh = params.w_hh
  w_hh_t = xla_cpu.transposed(w_hh)
  hidden = w_hh.shape[-1] // kind.num_gates
  if config.packed:
    d_final, d_store = d_final
    d_store_wide = upcast(d_store)

  def step(state, inputs):
    t, d_y, coefficients, segment = upcast(inputs)
    d_carry, d_initial = state if config.packed else (state, None)
    # Padded steps emit constant zeros: their outputs' cotangents go nowhere.
    if config.masked:
      valid = segment.valid if config.packed else t < mask
      d_y = jnp.where(valid[:, None], d_y, 0)
    if config.packed:  # where a sequence ends, its final carry's cotangent joins
      recorded = select_slots(segment.index, d_store_wide)
      d_carry = jax.tree.map(lambda d, r: d + jnp.where(to_leaf(segment.end, d), r, 0), d_carry, recorded)
    d_carry, d_gx, d_gh = kind.pullback(coefficients, d_carry, d_y)
    d_gh = d_gh.astype(w_hh.dtype)
    d_h = matmul(d_gh, w_hh_t)
    if kind.has_cell_state:
      d_carry = d_carry._replace(h=d_carry.h + d_h)
    else:
      d_carry = d_carry + d_h
    if config.packed:  # where a sequence starts, the carry came from its initial carry
      d_initial = add_at_starts(d_initial, d_carry, segment)
      d_carry = jax.tree.map(lambda d: jnp.where(to_leaf(segment.start, d), 0, d), d_carry)
      state = (d_carry, d_initial)
    else:
      state = d_carry
    # The gate gradients feed the weight-gradient matmuls in the compute dtype. A GRU's
    # d_gh equals its d_gx except in the last (n) block: only that block is stored.
    return state, (d_gh,) if kind.additive else (d_gx.astype(w_hh.dtype), d_gh[..., -hidden:])

  # The carry's gradient accumulates in (at least) float32, like the forward gate sums.
  state = upcast(d_final)
  if config.packed:
    state = (state, jax.tree.map(jnp.zeros_like, upcast(initial)))
  segments = mask if config.packed else None
  if config.pallas:
    state, d_z = pallas_loop.backward(
      kind, w_hh, coefficients, d_ys, state, ts, mask, reverse=not config.reverse, masked=config.masked
    )
  else:
    state, d_z = xla_cpu.scan_bits(
      step, state, (ts, d_ys, coefficients, segments), reverse=not config.reverse, unroll=config.unroll
    )
  if config.packed:
    d_carry, d_initial = state
    written = recorded_slots(segments, jax.tree.leaves(d_store)[0].shape[1])
    d_store = jax.tree.map(lambda d: jnp.where(to_leaf(written, d), 0, d), d_store)
    d_initial = jax.tree.map(lambda d, c: d.astype(c.dtype), d_initial, initial)
  else:
    d_carry, d_initial = state, None
  d_carry = jax.tree.map(lambda d, c: d.astype(c.dtype), d_carry, d_final)
  if kind.additive:
    d_gx = d_gh = d_z[0]
  else:
    d_gx, d_gh_n = d_z
    d_gh = jnp.concatenate([d_gx[..., :-hidden], d_gh_n], -1)
  if config.packed:
    hs = _previous_hidden_packed(ys, h0, segments, kind.hidden(initial), config.reverse)
  else:
    hs = _previous_hidden(ys, h0, ts, mask, config.reverse)
  grads = {'w_hh': xla_cpu.sum_of_outer_products(hs, d_gh, w_hh.dtype), 'b_hh': _bias_grad(params.b_hh, d_gh)}
  if config.in_step:
    grads['w_ih'] = xla_cpu.sum_of_outer_products(xs, d_gx, params.w_ih.dtype)
    grads['b_ih'] = _bias_grad(params.b_ih, d_gx)
    d_xs = matmul(d_gx, xla_cpu.transposed(params.w_ih)).astype(xs.dtype)
  else:
    d_xs = d_gx.astype(xs.dtype)
  d_params = params._replace(**grads)
  if config.packed:
    d_carry = (d_carry, d_store)
  return d_params, d_carry, d_initial, None, d_xs, None


_fused_loop.defvjp(_fused_loop_forward, _fused_loop_backward)


def _fused_packed(kind, params, initial, xs, segment_ids, num_segments, reverse, unroll, checkpoint_every):
  """``fused_scan_layer`` over packed sequences; ``initial`` leaves ``[B, S, ...]``, or ``[B, ...]``
  shared with ``num_segments``."""
  config = FusedLoopConfig(
    kind=kind, in_step=params.w_ih is not None, reverse=reverse, unroll=unroll, masked=True, packed=True
  )
  (_, store), ys = in_chunks(
    lambda state, ts, inputs: _fused_loop(config, params, state, initial, ts, *inputs),
    packed_state(initial, num_segments, 1),
    (xs, segment_steps(segment_ids, reverse)),
    checkpoint_every,
    reverse,
  )
  return store, ys


def _run_forward(config: FusedLoopConfig, params, carry, initial, ts, xs, mask, *, residuals: bool):
  """Returns ``(final_carry, ys)``, or with ``residuals`` ``(final_carry, (ys, coefficients))``."""
  kind = config.kind
  if config.pallas:
    return pallas_loop.forward(
      kind, params, carry, ts, xs, mask, reverse=config.reverse, masked=config.masked, residuals=residuals
    )

  def step(state, inputs):
    t, x, segment = inputs
    if config.packed:
      running, store = state
      carry = reset(running, initial, segment)
      valid = segment.valid
    else:
      carry, valid = state, t < mask
    gx = project_input(params, x) if config.in_step else x
    gh = recurrent_sum(params, kind.hidden(carry))
    args = (carry, gx + gh) if kind.additive else (carry, gx, gh)
    new_carry, y = (
      masked_update(valid, kind.pointwise(*args), carry) if config.masked else kind.pointwise(*args)
    )
    state = (new_carry, record(store, new_carry, segment)) if config.packed else new_carry
    if not residuals:
      return state, y
    # Stored in the compute dtype: in bfloat16 S1 that moves the weight gradients' error
    # against float32 from 0.25% to 0.27% (autodiff's: 2.9%) for 5% less time.
    coefficients = kind.linearize(*upcast(args), valid[..., None])
    return state, (y, tuple(k.astype(params.w_hh.dtype) for k in coefficients))

  segments = mask if config.packed else None
  return xla_cpu.scan_bits(step, carry, (ts, xs, segments), reverse=config.reverse, unroll=config.unroll)


def _previous_hidden(ys: Array, h0: Array, ts: Array, seq_lengths: Array, reverse: bool) -> Array:
  """Returns the hidden state each step of the loop started from, ``[T, B, H]``, from its outputs.

  ``ys[t]`` is the hidden state after a valid step ``t`` (zeros after padding) and
  ``h0`` the loop's initial one. Where a step is padding the result is arbitrary:
  its gradient coefficients are zero.
  """
  if not reverse:
    return jnp.concatenate([h0[None], ys])[:-1]
  # Reversed, step t starts from step t + 1's state, or from h0 when t + 1 is padding.
  after = jnp.concatenate([ys, h0[None]])[1:]
  return jnp.where(((ts + 1)[:, None] < seq_lengths)[..., None], after, h0[None])


def _previous_hidden_packed(
  ys: Array, h0: Array, segments: Segments, initial_h: Array, reverse: bool
) -> Array:
  """``_previous_hidden`` for packed sequences: a sequence's first step starts from its initial
  hidden state (``initial_h: [B, S, H]``, or ``[B, H]`` shared), any other valid step from its
  neighbour's output."""
  before = jnp.concatenate([ys, h0[None]])[1:] if reverse else jnp.concatenate([h0[None], ys])[:-1]
  fresh = initial_h[None] if initial_h.ndim == h0.ndim else select_steps(segments.index, initial_h)
  return jnp.where(segments.start[..., None], fresh, before)


def _bias_grad(bias: Array | None, d: Array) -> Array | None:
  """Returns ``d``'s sum over all rows, ``[G*H]``, in ``bias``'s dtype; None without a bias."""
  return None if bias is None else d.reshape(-1, d.shape[-1]).sum(0).astype(bias.dtype)
