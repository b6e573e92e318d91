"""Tunes the Pallas loop (``loop='pallas'``) on a GPU: forward+backward time per launch setting.

    python -m benchmarks.pallas_tune [--shapes S1,S4-lstm,S5] [--budget-s 240] [--out DIR]

For each shape (benchmarks/cases.py) and dtype (float32 with the default TF32, bfloat16) it
compiles jaxrnn's default scan loop and the Pallas loop under each setting of
``jaxrnn._src.pallas_loop``'s launch parameters (module attributes, read when a layer is
traced): the defaults, then one parameter changed at a time. The compiled calls then run in
interleaved rounds; a figure is the median over rounds. A setting Triton cannot compile (out of
shared memory or registers) is recorded with its error. Prints a line per measurement and
writes ``pallas-<stamp>.json`` to ``--out``. ``--allow-cpu`` runs tiny shapes in Pallas'
interpret mode (the tests do, so the script cannot rot without a GPU); its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import json
import pathlib
import statistics
import time

import jax
import jax.numpy as jnp

from benchmarks import cases
from benchmarks.common import interleaved_seconds

HERE = pathlib.Path(__file__).parent
DEFAULT_SHAPES = ('S4-lstm', 'S1', 'S5', 'S3')
# One parameter changed at a time from pallas_loop's defaults.
VARIATIONS = (
  {},
  {'BATCH_TILE': 32},
  {'BATCH_TILE': 64},
  {'BLOCK_BYTES': 16 * 1024},
  {'BLOCK_BYTES': 64 * 1024},
  {'NUM_WARPS': 2},
  {'NUM_WARPS': 8},
  {'NUM_STAGES': 1},
  {'NUM_STAGES': 2},
)


@contextlib.contextmanager
def launch_settings(**settings):
  """Sets ``pallas_loop``'s launch parameters while a layer is traced, then restores them."""
  from jaxrnn._src import pallas_loop

  saved = {name: getattr(pallas_loop, name) for name in settings}
  for name, value in settings.items():
    setattr(pallas_loop, name, value)
  try:
    yield
  finally:
    for name, value in saved.items():
      setattr(pallas_loop, name, value)


def compiled_forward_backward(shape, dtype, **options):
  """Returns ``(call, compile_s)``: a blocking call of the compiled forward+backward pass."""
  _, forward_backward, args = cases.jaxrnn_functions(shape, dtype=dtype, **options)
  start = time.perf_counter()
  compiled = jax.jit(forward_backward).lower(*args).compile()
  seconds = time.perf_counter() - start
  return (lambda: jax.block_until_ready(compiled(*args))), seconds


def label(settings) -> str:
  return ','.join(f'{k}={v}' for k, v in settings.items()) or 'defaults'


def tune(shape, dtype, variations, rounds, log):
  """Returns ``{setting: {'ms': ..., 'compile_s': ...} or {'error': ...}}`` for one shape and dtype."""
  calls, results = {}, {}
  candidates = [('scan', {}, {'loop': 'scan'})]
  candidates += [(f'pallas[{label(v)}]', v, {'loop': 'pallas'}) for v in variations]
  for name, settings, options in candidates:
    try:
      with launch_settings(**settings):
        call, seconds = compiled_forward_backward(shape, dtype, **options)
      call()  # a launch failure shows here, not in the timings
    except Exception as error:  # noqa: BLE001 -- recorded: Triton refuses some settings
      results[name] = {'error': f'{type(error).__name__}: {str(error)[:200]}'}
      log(f'  {shape.name} {jnp.dtype(dtype).name} {name}: FAILED {results[name]["error"]}')
      continue
    calls[name] = call
    results[name] = {'compile_s': round(seconds, 2)}
  for _ in range(3):  # warm-up
    for call in calls.values():
      call()
  for name, times in interleaved_seconds(calls, rounds).items():
    results[name]['ms'] = round(1e3 * statistics.median(times), 3)
    ratio = results[name]['ms'] / results['scan']['ms'] if 'scan' in calls else float('nan')
    log(
      f'  {shape.name} {jnp.dtype(dtype).name} {name}: {results[name]["ms"]:.3f} ms '
      f'({ratio:.2f}x the scan loop), compile {results[name]["compile_s"]:.2f} s'
    )
  return results


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--out', default=str(HERE / 'results'))
  parser.add_argument('--shapes', default=','.join(DEFAULT_SHAPES))
  parser.add_argument('--rounds', type=int, default=20)
  parser.add_argument('--budget-s', type=float, default=240, help='stop starting new shapes after this')
  parser.add_argument('--allow-cpu', action='store_true', help='tiny shapes on the CPU, interpret mode')
  parser.add_argument('--quick', action='store_true', help='float32, the defaults and one variation')
  args = parser.parse_args()
  gpu = jax.default_backend() == 'gpu'
  if not gpu and not args.allow_cpu:
    parser.error(f'no GPU: JAX runs on {jax.default_backend()!r} (use --allow-cpu to exercise the script)')
  start = time.perf_counter()
  shapes = [cases.SHAPES[name] for name in args.shapes.split(',')]
  if not gpu:
    shapes = [dataclasses.replace(s, batch=2, steps=3, features=3, hidden=4) for s in shapes]
  device = jax.devices()[0]
  report = {
    'date': datetime.datetime.now().strftime('%Y-%m-%d %H:%M'),
    'device': f'{device.platform}: {getattr(device, "device_kind", device)}',
    'jax': jax.__version__,
    'results': {},
  }
  print(f'{report["date"]} | {report["device"]} | jax {report["jax"]}', flush=True)
  variations = VARIATIONS[:2] if args.quick else VARIATIONS
  for shape in shapes:
    for dtype in (jnp.float32,) if args.quick else (jnp.float32, jnp.bfloat16):
      key = f'{shape.name} {jnp.dtype(dtype).name}'
      if time.perf_counter() - start > args.budget_s:
        report['results'][key] = {'skipped': 'time budget'}
        print(f'  {key}: skipped (time budget)', flush=True)
        continue
      report['results'][key] = tune(
        shape, dtype, variations, args.rounds if gpu else 1, lambda line: print(line, flush=True)
      )
  out = pathlib.Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  path = out / f'pallas-{datetime.datetime.now().strftime("%Y-%m-%d-%H%M")}.json'
  path.write_text(json.dumps(report, indent=1))
  print(f'wrote {path} in {time.perf_counter() - start:.0f} s', flush=True)


if __name__ == '__main__':
  main()
