"""Benchmark scripts run in CI at tiny sizes, so they cannot rot (nothing here is timed).

The GPU suite's code runs on the CPU too (``--allow-cpu``, tiny shapes), where no GPU is lent:
every smoke check and every candidate builder is exercised. ``benchmarks/packed.py --quick`` runs its
equality checks and every row; ``benchmarks/parallel.py --quick`` its associative = sequential check
and every row.

Their numbers mean nothing here and their kernels run microseconds, so the scripts run with XLA:CPU's
LLVM optimisation off (conftest's ``QUICK_COMPILE`` as XLA_FLAGS): the same HLO, the same checks, about
40% less compiling (166 s -> 91 s for the three, one process, on a busy 2-core machine)."""

import json
import os
import pathlib
import subprocess
import sys

import pytest
from conftest import QUICK_COMPILE

ROOT = pathlib.Path(__file__).parent.parent

pytestmark = pytest.mark.slow

XLA_FLAGS = ' '.join([os.environ.get('XLA_FLAGS', ''), *(f'--{k}={v}' for k, v in QUICK_COMPILE.items())])


def run_benchmark(module, *args):
  """``python -m benchmarks.<module> args`` from the repository root, compiled with ``QUICK_COMPILE``."""
  env = {**os.environ, 'XLA_FLAGS': XLA_FLAGS.strip()}
  command = [sys.executable, '-m', f'benchmarks.{module}', *args]
  return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)


def test_gpu_suite_runs_on_cpu(tmp_path):
  pytest.importorskip('torch')
  result = run_benchmark(
    'gpu', '--allow-cpu', '--quick', '--shapes', 'S1', '--runs', '1', '--out', str(tmp_path)
  )
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
  (report,) = tmp_path.glob('gpu-*.json')
  report = json.loads(report.read_text())
  own = [check for check in report['smoke'] if not check['peer']]
  assert own and all(check['ok'] for check in own), own
  rows = report['results']['S1']
  assert rows['jaxrnn']['fwdbwd_ms'] > 0 and rows['torch']['fwdbwd_ms'] > 0 and rows['flax']['fwdbwd_ms'] > 0
  assert 'error' in rows['jax.experimental.rnn']  # cuDNN only: recorded as an error on the CPU, not fatal
  assert (tmp_path / next(tmp_path.glob('gpu-*.md')).name).read_text().startswith('date ')


def test_packed_benchmark_quick():
  """``benchmarks/packed.py --quick``: packed, padded and PyTorch agree, and every row is timed."""
  pytest.importorskip('torch')
  pytest.importorskip('faker')  # the names distribution reads examples/classify_names.py's loader
  pytest.importorskip('optax')
  result = run_benchmark('packed', '--quick')
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
  checks = [line for line in result.stdout.splitlines() if line.strip().startswith('check ')]
  assert len(checks) == 8, result.stdout  # 2 distributions x (packed, 2 autodiff rows, torch) against padded
  rows = [line for line in result.stdout.splitlines() if line.startswith(('| names |', '| uniform |'))]
  # 5 rows a distribution, printed in its own table and again in the final one
  assert len(rows) == 20 and all('x |' in row for row in rows), result.stdout


def test_parallel_benchmark_quick():
  """``benchmarks/parallel.py --quick``: associative and sequential minGRU agree, and every row is timed."""
  result = run_benchmark('parallel', '--quick')
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
  checks = [line for line in result.stdout.splitlines() if line.startswith('check T=')]
  assert len(checks) == 1, result.stdout
  rows = [line for line in result.stdout.splitlines() if line.startswith('| 16 |')]
  assert len(rows) == 5 and all(row.endswith('x |') for row in rows), result.stdout  # 5 variants at T=16
  small = [line for line in result.stdout.splitlines() if line.startswith(('| 1 |', '| 4 |'))]
  assert len(small) == 4, result.stdout  # T in {1, 4} x (fwd+bwd, fwd)


def test_gpu_session_script_calls_existing_commands():
  """benchmarks/gpu_session.sh (the prepared device check) names modules and flags that exist."""
  import importlib
  import re
  import shlex

  root = pathlib.Path(__file__).parent.parent
  script = (root / 'benchmarks' / 'gpu_session.sh').read_text()
  subprocess.run(['bash', '-n', str(root / 'benchmarks' / 'gpu_session.sh')], check=True)
  calls = re.findall(r'python -m (benchmarks\.\w+)(.*)', script)
  assert {module for module, _ in calls} >= {
    'benchmarks.gpu',
    'benchmarks.pallas_tune',
    'benchmarks.parallel',
  }
  for module, args in calls:
    source = pathlib.Path(importlib.util.find_spec(module).origin).read_text()
    for flag in (a for a in shlex.split(args) if a.startswith('--')):
      assert f"'{flag}'" in source, (module, flag)
