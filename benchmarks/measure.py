"""Measures one (shape, framework) pair in this process and prints one JSON line.

python -m benchmarks.measure S1 jaxrnn [--runs 10] [--option unroll=2]
"""

import argparse
import json
import statistics
import time


def timed(fn, warmup, runs):
  for _ in range(warmup):
    fn()
  times = []
  for _ in range(runs):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times) * 1000


def measure_jax(forward, forward_backward, args, warmup, runs):
  import jax

  result = {}
  for mode, fn in (('fwd', forward), ('fwdbwd', forward_backward)):
    start = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    result[f'{mode}_compile_s'] = time.perf_counter() - start
    result[f'{mode}_ms'] = timed(
      lambda compiled=compiled: jax.block_until_ready(compiled(*args)), warmup, runs
    )
    memory = compiled.memory_analysis()
    if memory is not None:
      result[f'{mode}_peak_mb'] = (
        memory.temp_size_in_bytes + memory.argument_size_in_bytes + memory.output_size_in_bytes
      ) / 2**20
  return result


def roofline_ms(shape, warmup, runs):
  """Calibrated lower bounds of the forward and forward+backward times, with plain XLA GEMMs.

  Only the matrix products that any implementation of the layer must do, each measured
  here alone, elementwise work and masking free. Per layer and direction:

  - forward: one input-projection GEMM ``[B*T, F] x [F, G*H]`` plus ``T`` dependent
    recurrent GEMMs ``[B, H] x [H, G*H]`` run inside one compiled loop (so no
    per-call dispatch is counted);
  - backward, added for forward+backward: ``T`` dependent ``[B, G*H] x [G*H, H]``
    GEMMs in one loop (the gradient through ``h``), the weight gradients
    ``[H, B*T] x [B*T, G*H]`` and ``[F, B*T] x [B*T, G*H]``, and for layers after
    the first the input gradient ``[B*T, G*H] x [G*H, F]``.

  Returns ``(forward_ms, forward_backward_ms)``.
  """
  import jax
  import jax.numpy as jnp

  def gemm_ms(m, k, n, transpose_a=False):
    a = jnp.ones((k, m) if transpose_a else (m, k), jnp.float32)
    b = jnp.ones((k, n), jnp.float32)
    product = jax.jit(lambda a, b: (a.T if transpose_a else a) @ b)
    return timed(lambda: jax.block_until_ready(product(a, b)), warmup, runs)

  def loop_ms(k, n):
    w = jnp.full((k, n), 0.01, jnp.float32)

    @jax.jit
    def loop(h):
      def step(h, _):
        y = h @ w
        return jnp.tile(y, (1, -(-k // n)))[:, :k] if n < k else y[:, :k], None

      return jax.lax.scan(step, h, None, length=shape.steps)[0]

    h = jnp.ones((shape.batch, k), jnp.float32)
    return timed(lambda: jax.block_until_ready(loop(h)), warmup, runs)

  gh = shape.gates * shape.hidden
  rows = shape.batch * shape.steps
  recurrent_forward = loop_ms(shape.hidden, gh)
  recurrent_backward = loop_ms(gh, shape.hidden)
  weight_grad_hh = gemm_ms(shape.hidden, rows, gh, transpose_a=True)
  forward = backward = 0.0
  for layer in range(shape.layers):
    features = shape.features if layer == 0 else shape.directions * shape.hidden
    forward += shape.directions * (gemm_ms(rows, features, gh) + recurrent_forward)
    input_grad = gemm_ms(rows, gh, features) if layer else 0.0
    weight_grad_ih = gemm_ms(features, rows, gh, transpose_a=True)
    backward += shape.directions * (recurrent_backward + weight_grad_hh + weight_grad_ih + input_grad)
  return forward, forward + backward


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('shape')
  parser.add_argument('framework', choices=['jaxrnn', 'flax', 'torch'])
  parser.add_argument('--warmup', type=int, default=3)
  parser.add_argument('--runs', type=int, default=10)
  parser.add_argument(
    '--option',
    action='append',
    default=[],
    help='jaxrnn layer field, e.g. unroll=2; flax and torch: dtype only',
  )
  parser.add_argument('--roofline', action='store_true')
  args = parser.parse_args()

  from benchmarks import cases

  shape = cases.SHAPES[args.shape.split('@')[0]]
  if '@T=' in args.shape:
    shape = shape.with_steps(int(args.shape.split('@T=')[1]))
  result = {'shape': args.shape, 'framework': args.framework}
  options = {}
  for item in args.option:
    key, value = item.split('=')
    options[key] = {'True': True, 'False': False, 'None': None}.get(value, value)
    if isinstance(options[key], str) and options[key].isdigit():
      options[key] = int(options[key])
  if args.framework != 'jaxrnn' and set(options) - {'dtype'}:
    parser.error(f'{args.framework} takes only --option dtype=..., got {args.option}')
  if args.framework == 'torch':
    import torch

    torch.set_num_threads(max(1, torch.get_num_threads()))
    forward, forward_backward = cases.torch_functions(shape, **options)
    result['fwd_ms'] = timed(forward, args.warmup, args.runs)
    result['fwdbwd_ms'] = timed(forward_backward, args.warmup, args.runs)
    result['version'] = f'torch {torch.__version__}'
  else:
    import jax

    if args.framework == 'jaxrnn':
      functions = cases.jaxrnn_functions(shape, **options)
    else:
      functions = cases.flax_functions(shape, **options)
    result.update(measure_jax(*functions, args.warmup, args.runs))
    result['version'] = f'jax {jax.__version__}'
    if args.roofline:
      result['roofline_ms'], result['roofline_fwdbwd_ms'] = roofline_ms(shape, args.warmup, args.runs)
  print(json.dumps(result))


if __name__ == '__main__':
  main()
