"""The one time loop: ``jax.lax.scan`` with padding masks and masked reversal.

Everything that iterates over time goes through ``scan_layer``.

Padding (SPEC §3): a step ``t >= seq_lengths[b]`` keeps sequence ``b``'s carry
unchanged and emits zeros. Right padding plus a *reversed* scan under the same
mask is exactly the padding-aware reversal: the padded steps come first in
reverse order and leave the initial carry untouched, so the backward direction
starts at ``x[len_b - 1]``, ends after ``x[0]``, and writes every output at its
original position. Neither inputs nor outputs need flipping, and the final carry
is the scan's carry (no per-step stack of carries, O(1) extra memory).

The input projection ``x @ w_ih + b_ih`` can run inside the step or, hoisted,
as one matmul over all steps before the loop (``hoist_input_projection``).

``fused_scan_layer`` is the same loop with a hand-written backward pass
(``jax.custom_vjp``): one reversed scan whose step does a single matmul
(``dgh @ w_hh.T``); the weight gradients are then one large matmul each over
all steps instead of ``T`` small ones accumulated inside the loop.

Both take ``checkpoint_every=k``: the loop runs as ``ceil(T/k)`` chunks of ``k``
steps under ``jax.checkpoint``, so the backward pass stores one carry per chunk
and recomputes the chunk's steps (memory ``O(T/k + k)``, about ``sqrt(T)``
for ``k = sqrt(T)``, for one extra forward pass of compute).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from jaxrnn._src import checks
from jaxrnn._src.cells import CellKind
from jaxrnn._src.cells import accumulation_dtype
from jaxrnn._src.cells import matmul
from jaxrnn._src.cells import project_input
from jaxrnn._src.cells import recurrent_sum
from jaxrnn._src.types import Array
from jaxrnn._src.types import Carry
from jaxrnn._src.types import CellParams

Recurrence = Callable[[CellParams, Carry, Array], tuple[Carry, Array]]


def default_hoist_input_projection(backend: str | None = None) -> bool:
  """Returns whether the input projection is hoisted out of the loop by default.

  On GPU/TPU one big matmul before the loop is the standard win. On XLA:CPU
  (jax 0.10) the loop fusion that reads a slice of the precomputed projection
  is emitted without vectorisation, which made the hoisted form slower
  (benchmarks/README.md), so CPU keeps the projection inside the step.
  """
  return (backend or jax.default_backend()) != 'cpu'


def default_unroll(backend: str | None = None) -> int:
  """Returns the time steps per loop iteration used when a layer's ``unroll`` is None.

  On GPU each loop iteration costs a fixed overhead beyond its kernels; unrolling
  4 steps cut forward+backward on an H200 (jax 0.11.2, benchmarks/README.md) from
  3.4 to 2.6 ms on S1, 21 to 15 ms on S3 and 87 to 49 ms on S4-lstm. 8 steps were
  faster still (2.3, 13, 42 ms) but compiled S3 in 5.5 s, over the 5 s bound. On
  XLA:CPU unrolling did not pay (S1 fwd+bwd 163 vs 166 ms with 2); TPU is unmeasured.
  """
  return 4 if (backend or jax.default_backend()) == 'gpu' else 1


def _broadcast_to_leaf(valid: Array, leaf: Array) -> Array:
  return valid.reshape(valid.shape + (1,) * (leaf.ndim - valid.ndim))


def scan_layer(
  recurrence: Recurrence,
  params: CellParams,
  carry: Carry,
  xs: Array,
  seq_lengths: Array | None = None,
  *,
  reverse: bool = False,
  input_projection: Callable[[CellParams, Array], Array] | None = project_input,
  hoist_input_projection: bool = False,
  unroll: int = 1,
  remat: bool = False,
  checkpoint_every: int = 0,
  feature_ndim: int = 1,
) -> tuple[Carry, Array]:
  """Returns ``(final_carry, ys)`` of one cell run over axis 0 of ``xs``.

  Args:
    recurrence: ``(params, carry, gx) -> (new_carry, y)``, e.g.
      ``jaxrnn.lstm_cell`` with ``input_projection=None`` or a cell's
      recurrence with the default ``input_projection``.
    params: the cell's parameters (any pytree).
    carry: pytree with leaves ``[*batch, ...]``.
    xs: ``[T, *batch, F]`` time-major inputs (``[T, *batch, *features]``
      with ``feature_ndim`` feature axes).
    seq_lengths: integers ``[*batch]`` in ``[0, T]``, or ``None`` (all valid).
    reverse: read ``x[len-1], ..., x[0]`` (padding-aware backward direction).
    input_projection: ``(params, x) -> gx`` applied to the inputs before
      ``recurrence``; ``None`` passes ``x`` through unchanged.
    hoist_input_projection: compute ``input_projection`` for all ``T`` steps as
      one matmul before the loop instead of inside each step.
    unroll: steps per loop iteration (``jax.lax.scan``'s ``unroll``).
    remat: recompute each step's intermediates in the backward pass
      (``jax.checkpoint``), storing only the carries.
    checkpoint_every: if ``k > 0``, store the carry only every ``k`` steps and
      recompute the steps in between in the backward pass.
    feature_ndim: trailing feature axes of ``xs`` (1 for vectors).

  Returns:
    final_carry: the carry after each sequence's last valid step (the initial
      carry where ``seq_lengths == 0``), leaves ``[*batch, ...]``.
    ys: ``[T, *batch, H_out]``, the output of every step; zeros at padded
      steps.

  Examples:
    >>> import jax.numpy as jnp
    >>> from jaxrnn import CellParams, scan_layer, rnn_relu_cell
    >>> params = CellParams(w_ih=jnp.ones((1, 1)), w_hh=jnp.ones((1, 1)))
    >>> xs = jnp.ones((4, 2, 1))  # T=4, B=2, F=1: a running count
    >>> h, ys = scan_layer(rnn_relu_cell, params, jnp.zeros((2, 1)), xs,
    ...                    jnp.array([2, 4]), input_projection=None)
    >>> ys[..., 0].T
    Array([[1., 2., 0., 0.],
           [1., 2., 3., 4.]], dtype=float32)
    >>> h[:, 0]
    Array([2., 4.], dtype=float32)
  """
  seq_lengths = checks.check_scan_args(carry, xs, seq_lengths, feature_ndim)
  project = input_projection
  if project is not None and hoist_input_projection:
    xs = project(params, xs)
    project = None

  # Autodiff sums the gradient of the weights a loop closes over step by step, in their
  # own dtype: in bfloat16 that sum stagnates over long sequences (S4-lstm bias: 88%
  # off float32). The loop reads 16-bit weights through a float32 copy instead.
  wide = _upcast(params)

  def step(carry, x):
    params_ = jax.tree.map(lambda w, p: w.astype(p.dtype), wide, params)
    gx = x if project is None else project(params_, x)
    return recurrence(params_, carry, gx)

  if remat:
    step = jax.checkpoint(step)
  if checkpoint_every and seq_lengths is None and xs.shape[0] % checkpoint_every:
    seq_lengths = jnp.full(
      xs.shape[1 : xs.ndim - feature_ndim], xs.shape[0]
    )  # masks the last chunk's padding

  def run(carry, ts, xs):
    if seq_lengths is None:
      return _scan_wide(step, carry, xs, reverse=reverse, unroll=unroll)

    def body(carry, inputs):
      t, x = inputs
      return _masked(t < seq_lengths, step(carry, x), carry)

    return _scan_wide(body, carry, (ts, xs), reverse=reverse, unroll=unroll)

  return _with_empty_sequences(
    lambda carry: _in_chunks(run, carry, xs, checkpoint_every, reverse), carry, seq_lengths
  )


def _with_empty_sequences(loop, carry: Carry, seq_lengths: Array | None) -> tuple[Carry, Array]:
  """Returns ``loop(carry)`` with the initial carry of length-0 sequences replaced by zeros
  inside the loop and handed back unchanged as their final carry.

  A padded step's result is discarded, but its gradient is still formed as
  ``0 * d(step)/d(carry)``: a NaN or inf in a carry that is never read (the initial
  carry of a length-0 sequence) would turn every parameter gradient into NaN. The
  loop computes on zeros instead (the double-``where`` pattern), once per loop rather
  than per step.
  """
  if seq_lengths is None:
    return loop(carry)
  empty = seq_lengths == 0
  final, ys = loop(_zeros_where(empty, carry))
  return jax.tree.map(lambda f, c: jnp.where(_broadcast_to_leaf(empty, f), c, f), final, carry), ys


def _scan_wide(step, carry, xs, **options):
  """``jax.lax.scan`` that stacks 16-bit float outputs in float32 and converts them after the loop.

  XLA:CPU writes each bfloat16 slice into the stacked output by copying the whole
  buffer (S4, T=4096: 0.2 ms a step, 0.85 s of a 0.96 s forward); it writes float32
  slices in place. Differentiable, unlike ``_scan_bits``.
  """
  return _scan_stacked_as(step, carry, xs, _upcast, lambda a, dtype: a.astype(dtype), **options)


def _scan_stacked_as(step, carry, xs, encode, decode, encode_inputs=False, **options):
  """``jax.lax.scan`` whose outputs (and, with ``encode_inputs``, inputs) are stacked as
  ``encode(leaf)`` and handed back as ``decode(leaf, original_dtype)``."""
  in_dtypes = jax.tree.map(lambda a: a.dtype, xs)
  out_dtypes = []

  def body(carry, x):
    if encode_inputs:
      x = jax.tree.map(decode, x, in_dtypes)
    carry, y = step(carry, x)
    out_dtypes.append(jax.tree.map(lambda a: a.dtype, y))
    return carry, jax.tree.map(encode, y)

  carry, ys = jax.lax.scan(body, carry, jax.tree.map(encode, xs) if encode_inputs else xs, **options)
  return carry, jax.tree.map(decode, ys, out_dtypes[-1])


def _zeros_where(mask: Array, carry: Carry) -> Carry:
  """Returns ``carry`` with zeros where ``mask`` (``[*batch]``) is True."""
  return jax.tree.map(lambda c: jnp.where(_broadcast_to_leaf(mask, c), jnp.zeros_like(c), c), carry)


def _masked(valid: Array, new: tuple[Carry, Array], old: Carry) -> tuple[Carry, Array]:
  """Keeps ``old`` and emits zeros where ``valid`` (``[*batch]``) is False."""
  new_carry, y = new
  carry = jax.tree.map(lambda n, o: jnp.where(_broadcast_to_leaf(valid, n), n, o), new_carry, old)
  return carry, jnp.where(_broadcast_to_leaf(valid, y), y, jnp.zeros_like(y))


def _in_chunks(run, carry: Carry, xs: Array, every: int, reverse: bool) -> tuple[Carry, Array]:
  """Returns ``run(carry, ts, xs)``, in checkpointed chunks of ``every`` steps if ``every > 0``.

  ``run(carry, ts, xs) -> (carry, ys)`` loops over axis 0 of ``ts`` (the step
  indices) and ``xs``. The last chunk is padded with steps ``t >= T``, which the
  masks treat as padding (the caller must mask, i.e. pass ``seq_lengths``).
  """
  num_steps = xs.shape[0]
  ts = jnp.arange(num_steps)
  if not every or every >= num_steps:
    return run(carry, ts, xs)
  chunks = -(-num_steps // every)
  pad = chunks * every - num_steps
  xs = jnp.concatenate([xs, jnp.zeros((pad, *xs.shape[1:]), xs.dtype)]) if pad else xs
  ts = jnp.arange(chunks * every).reshape(chunks, every)
  chunk = jax.checkpoint(lambda carry, inputs: run(carry, *inputs))
  carry, ys = jax.lax.scan(chunk, carry, (ts, xs.reshape(chunks, every, *xs.shape[1:])), reverse=reverse)
  return carry, ys.reshape(chunks * every, *ys.shape[2:])[:num_steps]


def fused_scan_layer(
  kind: CellKind,
  params: CellParams,
  carry: Carry,
  xs: Array,
  seq_lengths: Array | None = None,
  *,
  reverse: bool = False,
  hoist_input_projection: bool = False,
  unroll: int = 1,
  checkpoint_every: int = 0,
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
  """
  if hoist_input_projection:
    xs = project_input(params, xs)  # one large matmul, differentiated by JAX
    params = params._replace(w_ih=None, b_ih=None)
  num_steps = xs.shape[0]
  given = seq_lengths
  # Without padding (no lengths, no padded last chunk) the loop skips the masks.
  masked = seq_lengths is not None or (0 < checkpoint_every < num_steps and num_steps % checkpoint_every)
  if seq_lengths is None:
    seq_lengths = jnp.full(xs.shape[1], num_steps)
  in_step = params.w_ih is not None
  loop = _fused_loop(kind, in_step, reverse, unroll, bool(masked))
  return _with_empty_sequences(
    lambda carry: _in_chunks(
      lambda carry, ts, xs: loop(params, carry, ts, xs, seq_lengths), carry, xs, checkpoint_every, reverse
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


def _fused_loop(kind: CellKind, in_step: bool, reverse: bool, unroll: int, masked: bool):
  def forward(params, carry, ts, xs, seq_lengths, residuals):
    def step(carry, inputs):
      t, x = inputs
      gx = project_input(params, x) if in_step else x
      gh = recurrent_sum(params, kind.hidden(carry))
      args = (carry, gx + gh) if kind.additive else (carry, gx, gh)
      valid = t < seq_lengths
      new_carry, y = _masked(valid, kind.pointwise(*args), carry) if masked else kind.pointwise(*args)
      if not residuals:
        return new_carry, y
      # Stored in the compute dtype: in bfloat16 S1 that moves the weight gradients' error
      # against float32 from 0.25% to 0.27% (autodiff's: 2.9%) for 5% less time.
      coefficients = kind.linearize(*_upcast(args), valid[..., None])
      return new_carry, (y, tuple(k.astype(params.w_hh.dtype) for k in coefficients))

    return _scan_bits(step, carry, (ts, xs), reverse=reverse, unroll=unroll)

  @jax.custom_vjp
  def loop(params, carry, ts, xs, seq_lengths):
    return forward(params, carry, ts, xs, seq_lengths, residuals=False)

  def loop_fwd(params, carry, ts, xs, seq_lengths):
    final, (ys, coefficients) = forward(params, carry, ts, xs, seq_lengths, residuals=True)
    return (final, ys), (params, xs, ys, kind.hidden(carry), coefficients, ts, seq_lengths)

  def loop_bwd(res, cotangents):
    params, xs, ys, h0, coefficients, ts, seq_lengths = res
    d_final, d_ys = cotangents
    w_hh = params.w_hh
    w_hh_t = _transposed(w_hh)
    hidden = w_hh.shape[-1] // kind.num_gates

    def step(d_carry, inputs):
      t, d_y, coefficients = _upcast(inputs)
      # Padded steps emit constant zeros: their outputs' cotangents go nowhere.
      if masked:
        d_y = jnp.where((t < seq_lengths)[:, None], d_y, 0)
      d_carry, d_gx, d_gh = kind.pullback(coefficients, d_carry, d_y)
      d_gh = d_gh.astype(w_hh.dtype)
      d_h = matmul(d_gh, w_hh_t)
      if kind.has_cell_state:
        d_carry = d_carry._replace(h=d_carry.h + d_h)
      else:
        d_carry = d_carry + d_h
      # The gate gradients feed the weight-gradient matmuls in the compute dtype. A GRU's
      # d_gh equals its d_gx except in the last (n) block: only that block is stored.
      return d_carry, (d_gh,) if kind.additive else (d_gx.astype(w_hh.dtype), d_gh[..., -hidden:])

    # The carry's gradient accumulates in (at least) float32, like the forward gate sums.
    d_carry, d_z = _scan_bits(
      step, _upcast(d_final), (ts, d_ys, coefficients), reverse=not reverse, unroll=unroll
    )
    d_carry = jax.tree.map(lambda d, c: d.astype(c.dtype), d_carry, d_final)
    if kind.additive:
      d_gx = d_gh = d_z[0]
    else:
      d_gx, d_gh_n = d_z
      d_gh = jnp.concatenate([d_gx[..., :-hidden], d_gh_n], -1)
    hs = _previous_hidden(ys, h0, ts, seq_lengths, reverse)
    grads = {'w_hh': _outer(hs, d_gh, w_hh.dtype), 'b_hh': _bias_grad(params.b_hh, d_gh)}
    if in_step:
      grads['w_ih'] = _outer(xs, d_gx, params.w_ih.dtype)
      grads['b_ih'] = _bias_grad(params.b_ih, d_gx)
      d_xs = matmul(d_gx, _transposed(params.w_ih)).astype(xs.dtype)
    else:
      d_xs = d_gx.astype(xs.dtype)
    d_params = params._replace(**grads)
    return d_params, d_carry, None, d_xs, None

  loop.defvjp(loop_fwd, loop_bwd)
  return loop


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


def _scan_bits(step, carry, xs, **options):
  """``jax.lax.scan`` that passes 16-bit floats in and out of the loop as ``uint16`` bits.

  XLA:CPU reads and writes slices of stacked bfloat16 arrays about 4x slower than the
  same bits as ``uint16`` (benchmarks/README.md). Not differentiable: for the fused
  loop's own forward and backward passes only.
  """
  return _scan_stacked_as(step, carry, xs, _to_bits, _from_bits, encode_inputs=True, **options)


def _to_bits(a: Array) -> Array:
  if jnp.issubdtype(a.dtype, jnp.floating) and a.dtype.itemsize == 2:
    return jax.lax.bitcast_convert_type(a, jnp.uint16)
  return a


def _from_bits(a: Array, dtype) -> Array:
  return jax.lax.bitcast_convert_type(a, dtype) if a.dtype != dtype else a


def _upcast(tree):
  """Returns ``tree`` with floating leaves in (at least) float32."""
  return jax.tree.map(
    lambda a: a.astype(accumulation_dtype(a.dtype)) if jnp.issubdtype(a.dtype, jnp.floating) else a, tree
  )


def _transposed(w: Array) -> Array:
  """Returns ``w.T`` materialised: XLA:CPU runs a bfloat16 dot only as ``[M, K] x [K, N]``
  and upcasts one that contracts a transposed operand to float32 (benchmarks/README.md)."""
  return jax.lax.optimization_barrier(w.T)


def _outer(a: Array, b: Array, dtype) -> Array:
  """Returns ``sum_{t,b} a[t, b].T @ b[t, b]``: ``[A, B']`` from ``a: [T, B, A]``, ``b: [T, B, B']``.

  One matmul over all ``T*B`` rows. Both operands contract their major axis;
  XLA:CPU runs that as a float32 matmul (upcasting bfloat16) when written as
  ``a.reshape(-1, A).T @ b``, but keeps bfloat16 (AMX) for the three-axis
  contraction, which in float32 is slower (benchmarks/README.md, bfloat16).
  """
  b = b.astype(a.dtype)
  if a.dtype.itemsize >= 4:
    return matmul(a.reshape(-1, a.shape[-1]).T, b.reshape(-1, b.shape[-1])).astype(dtype)
  return jnp.einsum('tba,tbc->ac', a, b, preferred_element_type=accumulation_dtype(a.dtype)).astype(dtype)


def _bias_grad(bias: Array | None, d: Array) -> Array | None:
  return None if bias is None else d.reshape(-1, d.shape[-1]).sum(0).astype(bias.dtype)
