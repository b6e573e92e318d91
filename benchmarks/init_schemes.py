"""Initialisation schemes: what does each ``init_scheme`` do to held-out accuracy?

Runs an example script (``examples/sequential_digits.py``: an LSTM; ``examples/classify_names.py``: a
2-layer bidirectional GRU) once per scheme and seed, each in its own process with fresh
checkpoints, and prints the held-out accuracy of every run, the mean per scheme and the commands.
The seed is the key of the initial parameters; the batches are the same for every run.

    python -m benchmarks.init_schemes --script sequential_digits                 # 9 runs, about 2.5 min on 2 cores
    python -m benchmarks.init_schemes --script classify_names --steps 400        # 9 runs, about 6 min
"""

import argparse
import os
import pathlib
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time

from benchmarks.common import environment

SCHEMES = ('pytorch', 'flax', 'keras')
ROOT = pathlib.Path(__file__).parent.parent


def run_once(script: str, scheme: str, seed: int, steps: int | None, folder: str) -> tuple[float, float, str]:
  """Returns ``(held-out accuracy, seconds, command)`` of one run of ``examples/<script>.py``."""
  command = [sys.executable, f'examples/{script}.py', '--init', scheme, '--seed', str(seed)]
  if steps:
    command += ['--steps', str(steps)]
  shown = ' '.join(shlex.quote(c) for c in ['python', *command[1:]])
  command += ['--ckpt-dir', f'{folder}/{script}-{scheme}-{seed}', '--plot', f'{folder}/plot.png']
  started = time.perf_counter()
  result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env={**os.environ, 'CI': '1'})
  seconds = time.perf_counter() - started
  match = re.search(r'held-out accuracy: ([0-9.]+)', result.stdout)
  if result.returncode or not match:
    raise RuntimeError(f'{shown} failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}')
  return float(match.group(1)), seconds, shown


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument(
    '--script', default='sequential_digits', choices=['sequential_digits', 'classify_names']
  )
  parser.add_argument('--steps', type=int, default=None, help="training steps (default: the script's)")
  parser.add_argument('--seeds', default='0,1,2')
  parser.add_argument('--schemes', default=','.join(SCHEMES))
  args = parser.parse_args()
  seeds = [int(s) for s in args.seeds.split(',')]
  schemes = args.schemes.split(',')
  accuracy, commands = {}, []
  with tempfile.TemporaryDirectory() as folder:
    for seed in seeds:  # interleaved, so that a change of the machine's load hits every scheme alike
      for scheme in schemes:
        accuracy[scheme, seed], seconds, command = run_once(args.script, scheme, seed, args.steps, folder)
        commands.append(command)
        print(f'{command}: {accuracy[scheme, seed]:.3f} ({seconds:.0f} s)', flush=True)
  print(f'\n{environment()}\n')
  print('| init_scheme | ' + ' | '.join(f'seed {s}' for s in seeds) + ' | mean |')
  print('|---' * (len(seeds) + 2) + '|')
  for scheme in schemes:
    values = [accuracy[scheme, s] for s in seeds]
    cells = ' | '.join(f'{v:.3f}' for v in values)
    print(f'| `{scheme}` | {cells} | **{statistics.mean(values):.3f}** |')


if __name__ == '__main__':
  main()
