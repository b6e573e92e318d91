"""Timing helpers shared by the benchmark scripts: warm-ups, medians, environment line."""

import datetime
import platform
import statistics
import time

import jax


def cpu_name() -> str:
  try:
    with open('/proc/cpuinfo') as f:
      names = [line.split(':', 1)[1].strip() for line in f if line.startswith('model name')]
    return f'{names[0]} x{len(names)}'
  except (OSError, IndexError):
    return platform.processor() or platform.machine()


def environment() -> str:
  """One line: date, device, CPU and library versions."""
  import flax

  device = jax.devices()[0]
  return (
    f'{datetime.date.today()} | {device.platform}: {getattr(device, "device_kind", device)} | '
    f'{cpu_name()} | jax {jax.__version__}, flax {flax.__version__}'
  )


def compile_seconds(fn, *args) -> float:
  """Seconds to lower and compile ``jax.jit(fn)`` for ``args``, without running it."""
  start = time.perf_counter()
  jax.jit(fn).lower(*args).compile()
  return time.perf_counter() - start


def median_seconds(fn, *args, warmup=3, runs=10) -> float:
  """Median wall time of ``fn(*args)`` (blocking on the result) after ``warmup`` calls."""
  for _ in range(warmup):
    jax.block_until_ready(fn(*args))
  times = []
  for _ in range(runs):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def interleaved_seconds(functions, rounds) -> dict:
  """Wall times of ``rounds`` calls of every ``functions[name]()``, interleaved: one call of each per round.

  Each function blocks until its work is done. Returns ``{name: [seconds per round]}``; take the
  median. Interleaving spreads a change of the machine's load over every function alike.
  """
  times = {name: [] for name in functions}
  for _ in range(rounds):
    for name, fn in functions.items():
      start = time.perf_counter()
      fn()
      times[name].append(time.perf_counter() - start)
  return times
