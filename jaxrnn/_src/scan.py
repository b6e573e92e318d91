"""The one time loop: ``jax.lax.scan`` with padding masks and masked reversal.

Everything that iterates over time goes through ``scan_layer`` or, for a
hand-written gradient, ``fused.fused_scan_layer``, which reuses this file's
masking, length-0 handling and checkpointed chunks.

Padding (SPEC §3): a step ``t >= seq_lengths[b]`` keeps sequence ``b``'s carry
unchanged and emits zeros. Right padding plus a *reversed* scan under the same
mask is exactly the padding-aware reversal: the padded steps come first in
reverse order and leave the initial carry untouched, so the backward direction
starts at ``x[len_b - 1]``, ends after ``x[0]``, and writes every output at its
original position. Neither inputs nor outputs need flipping, and the final carry
is the scan's carry (no per-step stack of carries, O(1) extra memory).

The input projection ``x @ w_ih + b_ih`` can run inside the step or, hoisted,
as one matmul over all steps before the loop (``hoist_input_projection``).

``checkpoint_every=k`` runs the loop as ``ceil(T/k)`` chunks of ``k`` steps
under ``jax.checkpoint``, so the backward pass stores one carry per chunk and
recomputes the chunk's steps (memory ``O(T/k + k)``, about ``sqrt(T)`` for
``k = sqrt(T)``, for one extra forward pass of compute).

How 16-bit floats pass through the loop on XLA:CPU is in ``xla_cpu.py``.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from jaxrnn._src import checks
from jaxrnn._src import xla_cpu
from jaxrnn._src.cells import project_input
from jaxrnn._src.cells import upcast
from jaxrnn._src.segments import record
from jaxrnn._src.segments import reset
from jaxrnn._src.segments import segment_steps
from jaxrnn._src.segments import slots
from jaxrnn._src.segments import to_leaf
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


def scan_layer(
  recurrence: Recurrence,
  params: CellParams,
  carry: Carry,
  xs: Array,
  seq_lengths: Array | None = None,
  *,
  segment_ids: Array | None = None,
  num_segments: int | None = None,
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
    carry: pytree with leaves ``[*batch, ...]``; with ``segment_ids``, one
      initial carry per packed sequence, leaves ``[*batch, S, ...]``, or with
      ``num_segments`` one shared by the sequences of a row, ``[*batch, ...]``.
    xs: ``[T, *batch, F]`` time-major inputs (``[T, *batch, *features]``
      with ``feature_ndim`` feature axes).
    seq_lengths: integers ``[*batch]`` in ``[0, T]``, or ``None`` (all valid).
    segment_ids: integers ``[T, *batch]`` instead of ``seq_lengths``: several
      sequences packed in each row (SPEC §11), ``0`` for padding and ids
      ``1..S`` for the sequences, each one contiguous run of steps. Every
      sequence starts from its own initial carry (``carry[..., id - 1, :]``).
    num_segments: ``S`` when ``carry`` is shared by a row's sequences; None
      when it holds one per sequence (``S`` is its slot axis).
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
      carry where ``seq_lengths == 0``), leaves ``[*batch, ...]``; with
      ``segment_ids``, each packed sequence's, leaves ``[*batch, S, ...]`` (the
      initial carry for ids that do not occur).
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
  seq_lengths, segment_ids = checks.check_scan_args(
    carry, xs, seq_lengths, feature_ndim, segment_ids, num_segments
  )
  project = input_projection
  if project is not None and hoist_input_projection:
    xs = project(params, xs)
    project = None

  # Autodiff sums the gradient of the weights a loop closes over step by step, in their
  # own dtype: in bfloat16 that sum stagnates over long sequences (S4-lstm bias: 88%
  # off float32). The loop reads 16-bit weights through a float32 copy instead.
  wide = upcast(params)

  def step(carry, x):
    params_ = jax.tree.map(lambda w, p: w.astype(p.dtype), wide, params)
    gx = x if project is None else project(params_, x)
    return recurrence(params_, carry, gx)

  if remat:
    step = jax.checkpoint(step)
  if segment_ids is not None:
    return _scan_packed(step, carry, xs, segment_ids, num_segments, reverse, unroll, checkpoint_every)
  if checkpoint_every and seq_lengths is None and xs.shape[0] % checkpoint_every:
    seq_lengths = jnp.full(
      xs.shape[1 : xs.ndim - feature_ndim], xs.shape[0]
    )  # masks the last chunk's padding

  def run(carry, ts, xs):
    if seq_lengths is None:
      return xla_cpu.scan_wide(step, carry, xs, reverse=reverse, unroll=unroll)

    def body(carry, inputs):
      t, x = inputs
      return masked_update(t < seq_lengths, step(carry, x), carry)

    return xla_cpu.scan_wide(body, carry, (ts, xs), reverse=reverse, unroll=unroll)

  return with_empty_sequences(
    lambda carry: in_chunks(run, carry, xs, checkpoint_every, reverse), carry, seq_lengths
  )


# Under autodiff, the selects of `reset` and `record` would keep their masks broadcast to
# [B, S, H] at every step (a 2-layer BiLSTM's temporaries: 98 instead of 42 MB); recomputed
# from the [B] ids in the backward pass instead.
_reset = jax.checkpoint(reset)
_record = jax.checkpoint(record)


def _scan_packed(
  step, initial: Carry, xs: Array, segment_ids: Array, num_segments, reverse, unroll, checkpoint_every
):
  """``scan_layer``'s loop over packed sequences: reset at each start, record at each end.

  The loop carries the running carry and the store of final carries (leaves
  ``[*batch, S, ...]``, starting as the initial carries, so that ids that do
  not occur keep theirs). The running carry starts at zeros and is never read
  before a reset: a row's first valid step always starts a sequence.
  """
  running, store = packed_state(initial, num_segments, segment_ids.ndim - 1)

  def run(state, ts, inputs):
    def body(state, inputs):
      running, store = state
      x, segment = inputs
      carry = _reset(running, initial, segment)
      carry, y = masked_update(segment.valid, step(carry, x), carry)
      return (carry, _record(store, carry, segment)), y

    return xla_cpu.scan_wide(body, state, inputs, reverse=reverse, unroll=unroll)

  segments = segment_steps(segment_ids, reverse)
  (_, store), ys = in_chunks(run, (running, store), (xs, segments), checkpoint_every, reverse)
  return store, ys


def packed_state(initial: Carry, num_segments: int | None, batch_ndim: int) -> tuple[Carry, Carry]:
  """Returns the packed loop's starting ``(running carry, store)``: zeros ``[*batch, ...]`` and the
  initial carries ``[*batch, S, ...]`` (``initial`` broadcast when shared, ``num_segments`` given)."""
  store = slots(initial, num_segments, batch_ndim)
  running = jax.tree.map(lambda leaf: jnp.zeros_like(leaf[(slice(None),) * batch_ndim + (0,)]), store)
  return running, store


def with_empty_sequences(loop, carry: Carry, seq_lengths: Array | None) -> tuple[Carry, Array]:
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
  return jax.tree.map(lambda f, c: jnp.where(to_leaf(empty, f), c, f), final, carry), ys


def _zeros_where(mask: Array, carry: Carry) -> Carry:
  """Returns ``carry`` with zeros where ``mask`` (``[*batch]``) is True."""
  return jax.tree.map(lambda c: jnp.where(to_leaf(mask, c), jnp.zeros_like(c), c), carry)


def masked_update(valid: Array, new: tuple[Carry, Array], old: Carry) -> tuple[Carry, Array]:
  """Returns a step's ``new = (carry, y)`` with ``old`` kept and zeros emitted where ``valid`` is False.

  ``valid``: ``[*batch]``; ``old``: the carry the step started from.
  """
  new_carry, y = new
  carry = jax.tree.map(lambda n, o: jnp.where(to_leaf(valid, n), n, o), new_carry, old)
  return carry, jnp.where(to_leaf(valid, y), y, jnp.zeros_like(y))


def in_chunks(run, carry: Carry, xs: Array, every: int, reverse: bool) -> tuple[Carry, Array]:
  """Returns ``run(carry, ts, xs)``, in checkpointed chunks of ``every`` steps if ``every > 0``.

  ``run(carry, ts, xs) -> (carry, ys)`` loops over axis 0 of ``ts`` (the step
  indices) and ``xs`` (any pytree of ``[T, ...]`` arrays). The last chunk is
  padded with steps ``t >= T`` and zeros in ``xs``, which the masks must treat
  as padding (the caller passes ``seq_lengths``, or segment ids: id 0).
  """
  num_steps = jax.tree.leaves(xs)[0].shape[0]
  ts = jnp.arange(num_steps)
  if not every or every >= num_steps:
    return run(carry, ts, xs)
  chunks = -(-num_steps // every)
  pad = chunks * every - num_steps

  def split(x):
    x = jnp.concatenate([x, jnp.zeros((pad, *x.shape[1:]), x.dtype)]) if pad else x
    return x.reshape(chunks, every, *x.shape[1:])

  ts = jnp.arange(chunks * every).reshape(chunks, every)
  chunk = jax.checkpoint(lambda carry, inputs: run(carry, *inputs))
  carry, ys = jax.lax.scan(chunk, carry, (ts, jax.tree.map(split, xs)), reverse=reverse)
  return carry, ys.reshape(chunks * every, *ys.shape[2:])[:num_steps]
