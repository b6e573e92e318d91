"""The time loop as one Pallas kernel (``loop='pallas'``): no kernel launch per step.

XLA runs a ``jax.lax.scan`` loop on a GPU as several kernels per step (the
recurrent matmul, the gate fusion, the loop's bookkeeping), each a launch. At
the batch sizes of recurrent training that fixed cost dominates: on an H200,
S4 (``B=16, H=64, T=4096``) ran at 12 µs per step where PyTorch's persistent
cuDNN kernel runs at 1.6 µs (benchmarks/README.md). Here the whole forward loop
of one layer direction is one ``pallas_call``:

- each program owns ``BATCH_TILE`` rows of the batch and runs all ``T`` steps;
- its state lives in a small buffer (two slots of ``[BATCH_TILE, Hp]`` for ``h``,
  one for an LSTM's ``c``, float32) that stays in cache between steps;
- each step multiplies ``h`` by ``w_hh`` in column blocks (``column_block``:
  16 to 64 units), every gate's block at once, and applies that block's gate
  math and padding mask right away; a barrier then publishes the new state to
  the next step.

The input projection is hoisted (one matmul over all steps before the kernel).
The backward pass is the fused backward's (``fused.py``) with its loop as the
second kernel: the forward kernel stores each step's gate pre-activations (and
the carry they started from), ``kind.linearize`` turns them into the fused
backward's coefficients over all steps at once, outside the loop, and the
weight gradients stay one matmul each over all steps. The gate math in both
kernels is the cell's own (``kind.pointwise``, ``kind.pullback``), on gate
blocks: Triton cannot split a ``[..., G*block]`` array.

Triton wants every array a power of two: the hidden size is padded to ``Hp``
(the next power of two, at least 16) inside each gate, and the batch to a
multiple of ``BATCH_TILE``. Zero padding is exact: a padded unit's gates see
zero pre-activations and weights, and every built-in cell maps a zero state and
zero pre-activations to a zero state; padded batch rows are padding at every
step. Results are sliced back.

On a GPU the kernel is compiled by Pallas' Triton backend; on other backends it
runs in Pallas' interpret mode, which is exact but slow (for tests on CPU).
Whether it beats the ``jax.lax.scan`` loop on a GPU is not measured yet:
``python -m benchmarks.gpu`` measures it (row ``jaxrnn[loop=pallas]``), and
``loop='auto'`` keeps the scan until those numbers say otherwise.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp

from jaxrnn._src.cells import CELL_KINDS
from jaxrnn._src.cells import CellKind
from jaxrnn._src.cells import upcast
from jaxrnn._src.types import Array
from jaxrnn._src.types import Carry
from jaxrnn._src.types import CellParams
from jaxrnn._src.types import LSTMState

# Launch parameters: module attributes, so that benchmarks/pallas_tune.py can sweep them on a GPU.
BATCH_TILE = 16  # rows per program: the smallest side of a Triton matmul
BLOCK = 64  # most hidden units per column block of w_hh (every gate's)
BLOCK_BYTES = 32 * 1024  # and at most this many bytes of one gate's [Hp, block] slice of w_hh
NUM_WARPS = 4
NUM_STAGES = None  # Triton's default software pipelining

# Tests set this to lower the compiled (Triton) kernel on a machine without a GPU.
_FORCE_COMPILED = False


def padded_size(n: int) -> int:
  """Returns the power of two, at least 16, that ``n`` rows or units are padded to."""
  return max(16, 1 << (n - 1).bit_length())


@dataclasses.dataclass(frozen=True)
class _Spec:
  """What stays fixed in one kernel: static, hashable."""

  kind: str
  steps: int
  hidden: int  # Hp, padded
  block: int  # units per column block
  compiled: bool  # Triton; else interpret mode, whose programs run one after the other (no barriers)
  reverse: bool
  masked: bool
  residuals: bool = False  # forward: store what the coefficients are computed from
  state_dtype: Any = jnp.float32  # forward: the carry's h, which the state is rounded to each step
  per_row: tuple[bool, ...] = ()  # backward: which coefficients are [T, B, 1] (passed as [T, B])


class _Layout:
  """Pads arrays to the kernel's power-of-two shapes and cuts results back."""

  def __init__(self, kind: CellKind, batch: int, hidden: int):
    self.gates, self.batch, self.hidden = kind.num_gates, batch, hidden
    self.padded = padded_size(hidden)
    self.rows = -(-batch // BATCH_TILE) * BATCH_TILE

  def units(self, a: Array, row_axis: int | None = None) -> Array:
    """``[..., H]`` -> ``[..., Hp]``, and the rows on ``row_axis`` to a multiple of ``BATCH_TILE``."""
    pads = [(0, 0)] * (a.ndim - 1) + [(0, self.padded - self.hidden)]
    if row_axis is not None:
      pads[row_axis] = (0, self.rows - self.batch)
    return jnp.pad(a, pads)

  def by_gate(self, a: Array, row_axis: int | None = None) -> Array:
    """``[..., G*H]`` -> ``[..., G, Hp]`` (rows padded as ``units``)."""
    return self.units(a.reshape(*a.shape[:-1], self.gates, self.hidden), row_axis)

  def rows_only(self, a: Array, row_axis: int) -> Array:
    """Pads only the rows on ``row_axis``."""
    return jnp.pad(a, [(0, self.rows - self.batch) if i == row_axis else (0, 0) for i in range(a.ndim)])

  def weights(self, w_hh: Array) -> Array:
    """Returns ``w_hh: [H, G*H]`` as ``[G, Hp, Hp]`` (gate, input unit, output unit)."""
    return jnp.pad(self.by_gate(w_hh), [(0, self.padded - self.hidden), (0, 0), (0, 0)]).transpose(1, 0, 2)

  def bias(self, b_hh: Array | None) -> Array:
    """Returns ``b_hh`` as ``[G, Hp]`` (zeros without a bias)."""
    return jnp.zeros((self.gates, self.padded), jnp.float32) if b_hh is None else self.by_gate(b_hh)

  def cut(self, a: Array) -> Array:
    """``[T, rows, Hp]`` -> ``[T, B, H]``; ``[T, rows, G, Hp]`` -> ``[T, B, G*H]``."""
    if a.ndim == 3:
      return a[:, : self.batch, : self.hidden]
    return a[:, : self.batch, :, : self.hidden].reshape(a.shape[0], self.batch, -1)


def _tiled(shape: tuple[int, ...], row_axis: int | None):
  """A ``BlockSpec`` of the whole array but ``BATCH_TILE`` rows of ``row_axis`` (None: all of it)."""
  from jax.experimental import pallas as pl

  block = tuple(BATCH_TILE if i == row_axis else n for i, n in enumerate(shape))
  return pl.BlockSpec(block, lambda i: tuple(i if a == row_axis else 0 for a in range(len(shape))))


def _call(kernel, spec, layout: _Layout, inputs, outputs, name: str):
  """Runs ``kernel`` with one program per ``BATCH_TILE`` rows.

  ``inputs``: ``(array, row_axis)`` pairs; ``outputs``: ``(shape, dtype, row_axis)``.
  """
  from jax.experimental import pallas as pl

  return pl.pallas_call(
    functools.partial(kernel, spec=spec),
    out_shape=tuple(jax.ShapeDtypeStruct(shape, dtype) for shape, dtype, _ in outputs),
    grid=(layout.rows // BATCH_TILE,),
    in_specs=[_tiled(a.shape, axis) for a, axis in inputs],
    out_specs=tuple(_tiled(shape, axis) for shape, _, axis in outputs),
    interpret=not spec.compiled,
    compiler_params=_compiler_params(),
    name=name,
  )(*(a for a, _ in inputs))


def column_block(padded: int, itemsize: int) -> int:
  """Returns the units per column block for ``Hp = padded`` units of ``itemsize`` bytes.

  Each step's matmul is one ``[BATCH_TILE, Hp] x [Hp, block]`` product per gate and
  block, staged through shared memory: ``BLOCK_BYTES`` bounds the weights' part of it
  (``H = 320`` in float32 pads to 512 and takes blocks of 16; ``H = 64``, blocks of 64).
  """
  fits = max(16, 1 << (BLOCK_BYTES // (padded * itemsize)).bit_length() - 1)
  return min(BLOCK, padded, fits)


def _spec(kind: CellKind, layout: _Layout, steps: int, w_hh: Array, **fields) -> _Spec:
  return _Spec(
    kind=kind.name,
    steps=steps,
    hidden=layout.padded,
    block=column_block(layout.padded, w_hh.dtype.itemsize),
    compiled=not _interpret(),
    **fields,
  )


def forward(
  kind: CellKind,
  params: CellParams,
  carry: Carry,
  ts: Array,
  xs: Array,
  seq_lengths: Array,
  *,
  reverse: bool,
  masked: bool,
  residuals: bool,
):
  """Returns what ``fused._run_forward`` returns, computed by one Pallas kernel.

  ``xs: [T, B, G*H]`` is the projected input (``params.w_ih`` is None); step
  ``t`` is padding where ``ts[t] >= seq_lengths``. Returns ``(final_carry, ys)``,
  or with ``residuals`` ``(final_carry, (ys, coefficients))``.
  """
  steps, batch = xs.shape[:2]
  lstm = kind.has_cell_state
  h0 = kind.hidden(carry)
  layout = _Layout(kind, batch, params.w_hh.shape[-1] // kind.num_gates)
  spec = _spec(
    kind,
    layout,
    steps,
    params.w_hh,
    reverse=reverse,
    masked=masked,
    residuals=residuals,
    state_dtype=h0.dtype,
  )
  rows, units, gates = layout.rows, layout.padded, kind.num_gates
  valid = ts[:, None] < seq_lengths[None] if masked else jnp.ones((steps, batch), bool)
  inputs = [
    (layout.rows_only(valid.astype(jnp.int32), 1), 1),
    (layout.by_gate(xs, 1), 1),
    (layout.weights(params.w_hh), None),
    (layout.bias(params.b_hh), None),
    *((layout.units(s, 0), 0) for s in ([h0, carry.c] if lstm else [h0])),
  ]
  f32 = jnp.float32
  outputs = [((steps, rows, units), h0.dtype, 1), ((2, rows, units), f32, 1)]  # ys; h in two slots
  if lstm:
    outputs.append(((rows, units), f32, 0))  # c
  if residuals:  # gate pre-activations (GRU: the recurrent ones); LSTM and GRU: the carry before
    outputs.append(((steps, rows, gates, units), f32, 1))
    if kind.name in ('lstm', 'gru'):
      outputs.append(((steps, rows, units), f32, 1))
  ys, h_slots, *outs = _call(_forward_kernel, spec, layout, inputs, outputs, f'jaxrnn_{kind.name}_forward')
  ys = layout.cut(ys)
  h = layout.cut(h_slots[steps % 2][None])[0].astype(h0.dtype)
  if lstm:
    c, *outs = outs
    final = LSTMState(h, layout.cut(c[None])[0].astype(carry.c.dtype))
  else:
    final = h
  if not residuals:
    return final, ys
  pre = layout.cut(outs[0])
  prev = layout.cut(outs[1]) if len(outs) > 1 else None
  if kind.name == 'lstm':
    args = (LSTMState(None, prev), pre)
  elif kind.name == 'gru':
    args = (prev, upcast(xs), pre)
  else:
    args = (None, pre)
  coefficients = kind.linearize(*args, valid[..., None])
  return final, (ys, tuple(k.astype(params.w_hh.dtype) for k in coefficients))


def backward(
  kind: CellKind,
  w_hh: Array,
  coefficients: tuple[Array, ...],
  d_ys: Array,
  d_carry: Carry,
  ts: Array,
  seq_lengths: Array,
  *,
  reverse: bool,
  masked: bool,
):
  """Returns the fused backward loop's ``(d_carry, d_z)`` (``fused._fused_loop_backward``), by one kernel.

  ``d_carry`` is the final carry's cotangent in float32 (``upcast``); the loop
  runs from step ``T - 1`` down, or up with ``reverse`` (the forward pass's
  order reversed). ``d_z`` is ``(d_gh,)`` for additive cells and ``(d_gx,
  d_gh[..., -H:])`` for GRU, ``[T, B, G*H]`` and ``[T, B, H]`` in ``w_hh``'s dtype.
  """
  steps, batch = d_ys.shape[:2]
  lstm, gates = kind.has_cell_state, kind.num_gates
  f32 = jnp.float32
  layout = _Layout(kind, batch, w_hh.shape[-1] // gates)
  per_row = tuple(k.shape[-1] == 1 for k in coefficients)
  spec = _spec(kind, layout, steps, w_hh, reverse=reverse, masked=masked, per_row=per_row)
  rows, units = layout.rows, layout.padded
  if masked:  # padded steps emit constant zeros: their outputs' cotangents go nowhere
    d_ys = jnp.where((ts[:, None] < seq_lengths[None])[..., None], d_ys, 0)
  # Per-row coefficients ([T, B, 1]) travel as [T, B]; the others padded to [T, rows, Hp].
  coefficients = [
    (layout.rows_only(k[..., 0], 1) if row else layout.units(k, 1), 1)
    for k, row in zip(coefficients, per_row, strict=True)
  ]
  d_state = [d_carry.h, d_carry.c] if lstm else [d_carry]
  inputs = [
    (layout.units(d_ys, 1), 1),
    (layout.weights(w_hh).transpose(0, 2, 1), None),  # [G, Hp out, Hp in]: d_h = sum_g d_gh[g] @ w[g].T
    *coefficients,
    *((layout.units(s, 0), 0) for s in d_state),
  ]
  outputs = [((steps, rows, gates, units), w_hh.dtype, 1), ((2, rows, units), f32, 1)]  # d_gh (GRU: d_gx)
  if lstm:
    outputs.append(((rows, units), f32, 0))
  if not kind.additive:
    outputs.append(((steps, rows, units), w_hh.dtype, 1))  # GRU: d_gh's n block
  d_z, d_h_slots, *outs = _call(
    _backward_kernel, spec, layout, inputs, outputs, f'jaxrnn_{kind.name}_backward'
  )
  d_h = layout.cut(d_h_slots[steps % 2][None])[0]
  if lstm:
    d_c, *outs = outs
    d_carry = LSTMState(d_h, layout.cut(d_c[None])[0])
  else:
    d_carry = d_h
  return d_carry, (layout.cut(d_z), *(layout.cut(o) for o in outs))


def _interpret() -> bool:
  """Whether the kernel runs in Pallas' interpret mode: off a GPU, unless a test lowers it for one."""
  return jax.default_backend() != 'gpu' and not _FORCE_COMPILED


def _compiler_params():
  from jax.experimental.pallas import triton as plgpu

  return plgpu.CompilerParams(num_warps=NUM_WARPS, num_stages=NUM_STAGES)


def _forward_kernel(*refs, spec: _Spec):
  """One program: ``BATCH_TILE`` rows through all steps. Refs as ``forward`` lays them out."""
  from jax.experimental import pallas as pl
  from jax.experimental.pallas import triton as plgpu

  kind = CELL_KINDS[spec.kind]
  lstm, gru = kind.has_cell_state, not kind.additive
  refs = list(refs)
  valid_ref, gx_ref, w_ref, b_ref, h0_ref = refs[:5]
  del refs[:5]
  c0_ref = refs.pop(0) if lstm else None
  ys_ref, h_ref = refs[:2]
  del refs[:2]
  c_ref = refs.pop(0) if lstm else None
  pre_ref = refs.pop(0) if spec.residuals else None
  prev_ref = refs.pop(0) if spec.residuals and (lstm or gru) else None
  f32 = jnp.float32

  h_ref[0] = h0_ref[...].astype(f32)
  if lstm:
    c_ref[...] = c0_ref[...].astype(f32)
  barrier = plgpu.debug_barrier if spec.compiled else lambda: None
  barrier()

  def step(i, _):
    t = spec.steps - 1 - i if spec.reverse else i
    read = jax.lax.rem(i, jnp.int32(2))
    h_in = h_ref[read].astype(w_ref.dtype)  # [BATCH_TILE, Hp]
    valid = valid_ref[t][:, None] != 0

    def block(n, _):
      cols = pl.ds(pl.multiple_of(n * spec.block, spec.block), spec.block)
      gh = [
        jnp.dot(h_in, w_ref[g, :, cols], preferred_element_type=f32) + b_ref[g, cols][None].astype(f32)
        for g in range(kind.num_gates)
      ]
      gx = [gx_ref[t, :, g, cols].astype(f32) for g in range(kind.num_gates)]
      h_old = h_ref[read, :, cols]
      # The cell's own pointwise step, on gate blocks (Triton cannot split a [.., G*block] array).
      if lstm:
        prev = c_ref[:, cols]
        pre = [a + b for a, b in zip(gx, gh, strict=True)]
        new, _ = kind.pointwise(LSTMState(h_old, prev), pre)
        h_new, c_new = new
      elif kind.additive:
        prev, pre = None, [gx[0] + gh[0]]
        h_new, _ = kind.pointwise(h_old, pre)
      else:  # GRU: the recurrent pre-activations apart
        prev, pre = h_old, gh
        h_new, _ = kind.pointwise(h_old, gx, gh)
      h_new = h_new.astype(spec.state_dtype).astype(f32)  # as the scan loop's carry
      y = h_new
      if spec.masked:  # a padded step keeps the state and outputs zeros
        h_new = jnp.where(valid, h_new, h_old)
        y = jnp.where(valid, y, 0.0)
        if lstm:
          c_new = jnp.where(valid, c_new, prev)
      h_ref[1 - read, :, cols] = h_new
      if lstm:
        c_ref[:, cols] = c_new
      ys_ref[t, :, cols] = y.astype(ys_ref.dtype)
      if spec.residuals:
        for g, p in enumerate(pre):
          pre_ref[t, :, g, cols] = p
        if prev is not None:
          prev_ref[t, :, cols] = prev
      return 0

    jax.lax.fori_loop(0, spec.hidden // spec.block, block, 0)
    barrier()  # the new state, written by all threads, is read whole by the next step
    return 0

  jax.lax.fori_loop(0, spec.steps, step, 0)


def _backward_kernel(*refs, spec: _Spec):
  """One program of ``backward``: ``BATCH_TILE`` rows through all steps, last first.

  Each step has two phases, a barrier apart: per column block, the cell's
  pullback (``kind.pullback`` on gate blocks) stores the gate gradients and
  the carry's cotangent but for the matmul; then, per block of ``h``'s units,
  ``sum_g d_gh[g] @ w_hh[g].T`` is added to the latter.
  """
  from jax.experimental import pallas as pl
  from jax.experimental.pallas import triton as plgpu

  kind = CELL_KINDS[spec.kind]
  lstm, gru = kind.has_cell_state, not kind.additive
  refs = list(refs)
  d_ys_ref, w_ref = refs[:2]
  coefficient_refs = refs[2 : 2 + len(spec.per_row)]
  del refs[: 2 + len(spec.per_row)]
  d_h0_ref = refs.pop(0)
  d_c0_ref = refs.pop(0) if lstm else None
  d_z_ref, d_h_ref = refs[:2]
  del refs[:2]
  d_c_ref = refs.pop(0) if lstm else None
  d_hn_ref = refs.pop(0) if gru else None
  f32 = jnp.float32
  barrier = plgpu.debug_barrier if spec.compiled else lambda: None
  blocks = spec.hidden // spec.block

  d_h_ref[0] = d_h0_ref[...]
  if lstm:
    d_c_ref[...] = d_c0_ref[...]
  barrier()

  def step(i, _):
    t = spec.steps - 1 - i if spec.reverse else i
    read = jax.lax.rem(i, jnp.int32(2))

    def columns(n):
      return pl.ds(pl.multiple_of(n * spec.block, spec.block), spec.block)

    def pullback(n, _):
      cols = columns(n)
      k = [
        ref[t][:, None].astype(f32) if row else ref[t, :, cols].astype(f32)
        for ref, row in zip(coefficient_refs, spec.per_row, strict=True)
      ]
      d_carry = d_h_ref[read, :, cols]
      if lstm:
        d_carry = LSTMState(d_carry, d_c_ref[:, cols])
      # The cell's own pullback, on gate blocks.
      d_carry, d_z, d_gh = kind.pullback(k, d_carry, d_ys_ref[t, :, cols].astype(f32), blocked=True)
      if lstm:
        d_carry, d_c_ref[:, cols] = d_carry
      if gru:  # its d_gh differs from d_gx in the n block only
        d_hn_ref[t, :, cols] = d_gh[2].astype(d_hn_ref.dtype)
      for g, d in enumerate(d_z):
        d_z_ref[t, :, g, cols] = d.astype(d_z_ref.dtype)
      d_h_ref[1 - read, :, cols] = d_carry
      return 0

    def recurrent(n, _):
      cols = columns(n)
      total = d_h_ref[1 - read, :, cols]
      for g in range(kind.num_gates):
        d_gh = d_hn_ref[t] if gru and g == 2 else d_z_ref[t, :, g, :]
        total += jnp.dot(d_gh, w_ref[g, :, cols], preferred_element_type=f32)
      d_h_ref[1 - read, :, cols] = total
      return 0

    jax.lax.fori_loop(0, blocks, pullback, 0)
    barrier()  # every gate gradient of this step is stored
    jax.lax.fori_loop(0, blocks, recurrent, 0)
    barrier()  # the carry's cotangent is read whole by the next step
    return 0

  jax.lax.fori_loop(0, spec.steps, step, 0)
