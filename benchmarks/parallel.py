"""Parallel-scan cells (SPEC §12): minGRU as one associative scan against the sequential loop and GRU.

Forward+backward time, compile time and peak memory against ``T`` of

- ``jaxrnn.Recurrent(jaxrnn.MinGRUCell(H), scan_mode='associative')`` (one ``lax.associative_scan``),
- the same layer with ``scan_mode='sequential'`` (the ``lax.scan`` loop),
- ``jaxrnn.GRU(H)`` (default options: the fused backward on the CPU),
- minGRU with ``log_space=True``, associative (the paper's log-space scan),
- minGRU associative with ragged ``seq_lengths`` uniform in ``[T/2, T]``,

float32, ``B = 16``, ``F = H = 256``. Loss: the sum of the outputs; the jitted gradient with respect
to the parameters. "compile s" is lowering plus compiling that gradient; "peak MB" is XLA's memory
analysis of the compiled gradient (arguments + outputs + temporaries), as in the other sections.
Time: one call of every variant per round, variants interleaved, median over rounds (fewer rounds
at large ``T``), after two warm-up calls; associative and sequential minGRU gradients are checked
equal first.

Then the small-``T`` check behind the ``'auto'`` rule: the same minGRU, associative against
sequential, ``T`` in {1, 2, 8, 16, 32, 64, 128, 256, 512}, forward+backward and forward only.

    python -m benchmarks.parallel            # about 7 minutes on 2 quiet cores
    python -m benchmarks.parallel --quick    # tiny sizes, seconds (the smoke test)
"""

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

import jaxrnn
from benchmarks.common import environment
from benchmarks.common import interleaved_seconds

SIZES = dict(
  batch=16,
  features=256,
  hidden=256,
  steps=(256, 1024, 4096, 16384),
  small=(1, 2, 8, 16, 32, 64, 128, 256, 512),
)
QUICK = dict(batch=2, features=8, hidden=8, steps=(16,), small=(1, 4))


def rounds_for(steps, quick):
  if quick:
    return 2
  return 10 if steps <= 1024 else 5 if steps <= 4096 else 3


def layers(hidden):
  return {
    'minGRU associative': (jaxrnn.Recurrent(jaxrnn.MinGRUCell(hidden), scan_mode='associative'), False),
    'minGRU sequential': (jaxrnn.Recurrent(jaxrnn.MinGRUCell(hidden), scan_mode='sequential'), False),
    'GRU': (jaxrnn.GRU(hidden), False),
    'minGRU log_space associative': (
      jaxrnn.Recurrent(jaxrnn.MinGRUCell(hidden, log_space=True), scan_mode='associative'),
      False,
    ),
    'minGRU associative, ragged': (
      jaxrnn.Recurrent(jaxrnn.MinGRUCell(hidden), scan_mode='associative'),
      True,
    ),
  }


def peak_mb(compiled):
  memory = compiled.memory_analysis()
  if memory is None:
    return float('nan')
  return (memory.temp_size_in_bytes + memory.argument_size_in_bytes + memory.output_size_in_bytes) / 2**20


def prepare(layer, x, lengths, forward_only=False):
  """``(compiled, args, compile seconds)`` of the jitted gradient (or forward) of ``sum(outputs)``."""
  variables = layer.init(jax.random.key(0), x[:, :1])

  def forward(variables, x, lengths):
    return layer.apply(variables, x, lengths)[0]

  def loss(variables, x, lengths):
    return jnp.sum(forward(variables, x, lengths))

  fn = forward if forward_only else jax.grad(loss)
  args = (variables, x, lengths)
  start = time.perf_counter()
  compiled = jax.jit(fn).lower(*args).compile()
  seconds = time.perf_counter() - start
  return compiled, args, seconds


def call(compiled, args):
  return lambda: jax.block_until_ready(compiled(*args))


def check_equal(prepared, steps):
  a = compiled_result(prepared['minGRU associative'])
  b = compiled_result(prepared['minGRU sequential'])
  diff = max(
    float(jnp.max(jnp.abs(u - v)) / (jnp.max(jnp.abs(v)) + 1e-30)) for u, v in zip(a, b, strict=True)
  )
  print(f'check T={steps}: minGRU associative vs sequential gradients, max relative diff {diff:.1e}')
  if diff > 1e-3:
    raise SystemExit(f'associative and sequential gradients differ at T={steps}: {diff}')


def compiled_result(item):
  compiled, args, _ = item
  return jax.tree.leaves(compiled(*args))


def long_sequences(sizes, quick, rng):
  print('\n## Forward+backward against T (B={batch}, F={features}, H={hidden})\n'.format(**sizes))
  print('| T | variant | fwd+bwd ms (median of rounds) | compile s | peak MB | GRU / this |')
  print('|---:|---|---:|---:|---:|---:|')
  table = {}
  for steps in sizes['steps']:
    x = jnp.asarray(rng.normal(size=(sizes['batch'], steps, sizes['features'])).astype(np.float32))
    full = jnp.full((sizes['batch'],), steps, jnp.int32)
    ragged = jnp.asarray(rng.integers(steps // 2, steps + 1, size=sizes['batch']), jnp.int32)
    prepared = {}
    for name, (layer, is_ragged) in layers(sizes['hidden']).items():
      prepared[name] = prepare(layer, x, ragged if is_ragged else full)
    check_equal(prepared, steps)
    functions = {name: call(compiled, args) for name, (compiled, args, _) in prepared.items()}
    interleaved_seconds(functions, 2)  # warm-up
    rounds = rounds_for(steps, quick)
    times = interleaved_seconds(functions, rounds)
    medians = {name: statistics.median(t) * 1e3 for name, t in times.items()}
    for name, (compiled, _, seconds) in prepared.items():
      ratio = medians['GRU'] / medians[name]
      table[steps, name] = (medians[name], seconds, peak_mb(compiled), ratio)
      print(
        f'| {steps} | {name} | {medians[name]:.1f} ({rounds} rounds: '
        + ', '.join(f'{t * 1e3:.0f}' for t in times[name])
        + f') | {seconds:.2f} | {peak_mb(compiled):.0f} | {ratio:.2f}x |',
        flush=True,
      )
    del prepared, functions
  return table


def small_steps(sizes, quick, rng):
  print(
    '\n## Small T: minGRU associative vs sequential (B={batch}, F={features}, H={hidden})\n'.format(**sizes)
  )
  print('| T | mode | associative ms | sequential ms | sequential / associative | compile s assoc / seq |')
  print('|---:|---|---:|---:|---:|---:|')
  rounds = 2 if quick else 40
  for steps in sizes['small']:
    x = jnp.asarray(rng.normal(size=(sizes['batch'], steps, sizes['features'])).astype(np.float32))
    lengths = jnp.full((sizes['batch'],), steps, jnp.int32)
    for mode, forward_only in (('fwd+bwd', False), ('fwd', True)):
      prepared = {
        scan_mode: prepare(
          jaxrnn.Recurrent(jaxrnn.MinGRUCell(sizes['hidden']), scan_mode=scan_mode), x, lengths, forward_only
        )
        for scan_mode in ('associative', 'sequential')
      }
      functions = {name: call(compiled, args) for name, (compiled, args, _) in prepared.items()}
      interleaved_seconds(functions, 3)
      times = interleaved_seconds(functions, rounds)
      assoc, seq = (statistics.median(times[name]) * 1e3 for name in ('associative', 'sequential'))
      compile_a, compile_s = prepared['associative'][2], prepared['sequential'][2]
      print(
        f'| {steps} | {mode} | {assoc:.3f} | {seq:.3f} | {seq / assoc:.2f}x | {compile_a:.2f} / {compile_s:.2f} |',
        flush=True,
      )


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--quick', action='store_true', help='tiny sizes, seconds (the smoke test)')
  parser.add_argument('--skip-long', action='store_true', help='only the small-T check')
  parser.add_argument('--skip-small', action='store_true', help='only the table against T')
  parser.add_argument(
    '--steps', help='comma-separated T of the table against T (default 256,1024,4096,16384)'
  )
  args = parser.parse_args()
  sizes = dict(QUICK if args.quick else SIZES)
  if args.steps:
    sizes['steps'] = tuple(int(t) for t in args.steps.split(','))
  rng = np.random.default_rng(0)
  print(environment())
  if not args.skip_long:
    long_sequences(sizes, args.quick, rng)
  if not args.skip_small:
    small_steps(sizes, args.quick, rng)


if __name__ == '__main__':
  main()
