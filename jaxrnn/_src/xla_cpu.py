"""Workarounds for how XLA:CPU handles 16-bit floats in the time loops.

Each function here computes exactly what its plain form would (same values, any
backend); it only changes the dtype or layout XLA:CPU sees, because the plain
form was measurably slower there in bfloat16. The measurements are from the CPU
benchmark machine of ``benchmarks/README.md`` (2-core Intel Xeon with AMX,
XLA:CPU, jax 0.10.2; sections "bfloat16 fixes for XLA:CPU" and "The autodiff
path in bfloat16"). In float32 every function is its plain form.

``scan.py`` stacks the autodiff loop's outputs with ``scan_wide``; ``fused.py``
runs its forward and backward loops with ``scan_bits`` and forms its gradients
with ``transposed`` and ``sum_of_outer_products``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxrnn._src.cells import accumulation_dtype
from jaxrnn._src.cells import matmul
from jaxrnn._src.cells import upcast
from jaxrnn._src.types import Array


def scan_wide(step, carry, xs, **options):
  """Returns ``jax.lax.scan(step, carry, xs, **options)``, its 16-bit float outputs stacked in float32.

  XLA:CPU writes each bfloat16 slice into a stacked scan output by copying the
  whole buffer; it writes float32 slices in place. S4-lstm (T=4096) in bfloat16:
  0.2 ms a step, 0.85 s of a 0.96 s forward; stacking in float32 and converting
  after the loop brought that forward to 54 ms. Differentiable, unlike
  ``scan_bits``: the autodiff loop (``scan_layer``) uses it.
  """
  return _scan_stacked_as(step, carry, xs, upcast, lambda a, dtype: a.astype(dtype), **options)


def scan_bits(step, carry, xs, **options):
  """Returns ``jax.lax.scan(step, carry, xs, **options)``, 16-bit floats passed in and out as ``uint16`` bits.

  XLA:CPU reads and writes slices of stacked bfloat16 arrays about 4x slower than
  the same bits as ``uint16``: 100 steps of ``[64, 1280]``, 43 vs 11 ms. Passing
  the backward loop's gate gradients out in bfloat16 this way instead of float32
  took S1 bfloat16 forward+backward from 107-111 to 98-103 ms (micro-benchmark).
  Not differentiable: for the fused loop's own forward and backward passes only.
  """
  return _scan_stacked_as(step, carry, xs, _to_bits, _from_bits, encode_inputs=True, **options)


def transposed(w: Array) -> Array:
  """Returns ``w.T``, materialised so that a dot reads it untransposed.

  XLA:CPU runs a bfloat16 dot on the AMX units only as ``[M, K] x [K, N]``; one
  that contracts a transposed operand (``g @ w.T``) it upcasts to float32. With
  ``sum_of_outer_products`` and the ``uint16`` loops this took S1 bfloat16
  forward+backward from 170-176 to 115 ms. The ``optimization_barrier`` keeps the
  transpose a separate operation rather than part of the dot.
  """
  return jax.lax.optimization_barrier(w.T)


def sum_of_outer_products(a: Array, b: Array, dtype) -> Array:
  """Returns ``sum_{t,b} a[t, b].T @ b[t, b]`` in ``dtype``: ``[A, C]`` from ``a: [T, B, A]``, ``b: [T, B, C]``.

  One matmul over all ``T*B`` rows (a weight gradient). Both operands contract
  their major axis; written as ``a.reshape(-1, A).T @ b``, XLA:CPU runs it as a
  float32 matmul (upcasting bfloat16), but keeps bfloat16 (AMX) for the
  three-axis ``einsum``: a ``[320, 6400] x [6400, 1280]`` product took 36 ms as
  ``a.T @ b`` and 10.5 ms as the einsum. In float32 the einsum is the slower of
  the two, so float32 keeps the two-axis matmul.
  """
  b = b.astype(a.dtype)
  if a.dtype.itemsize >= 4:
    return matmul(a.reshape(-1, a.shape[-1]).T, b.reshape(-1, b.shape[-1])).astype(dtype)
  return jnp.einsum('tba,tbc->ac', a, b, preferred_element_type=accumulation_dtype(a.dtype)).astype(dtype)


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


def _to_bits(a: Array) -> Array:
  if jnp.issubdtype(a.dtype, jnp.floating) and a.dtype.itemsize == 2:
    return jax.lax.bitcast_convert_type(a, jnp.uint16)
  return a


def _from_bits(a: Array, dtype) -> Array:
  return jax.lax.bitcast_convert_type(a, dtype) if a.dtype != dtype else a
