"""Examples that make a claim a test can check, and that behave when a newcomer re-runs them."""

import os
import pathlib
import subprocess
import sys

import pytest

EXAMPLES = pathlib.Path(__file__).parent.parent / 'examples'


def run_example(script, *args, env=None, block=None):
  """Runs ``python script args`` in examples/ as a user would; ``block`` hides a module first."""
  env = {**os.environ, 'MPLBACKEND': 'Agg', **(env or {})}
  if block is None:
    command = [sys.executable, script, *args]
  else:  # `python script` with `block` uninstallable: sys.modules[name] = None fails its import
    command = [
      sys.executable,
      '-c',
      'import runpy, sys; '
      f'sys.modules[{block!r}] = None; sys.path.insert(0, "."); sys.argv = {[script, *args]!r}; '
      f'runpy.run_path({script!r}, run_name="__main__")',
    ]
  return subprocess.run(command, cwd=EXAMPLES, env=env, capture_output=True, text=True)


def test_sharded_training_matches_one_device():
  """8 fake CPU devices, batch split over them: the same losses as 1 device."""
  pytest.importorskip('faker')
  result = run_example(
    'train_sharded.py',
    '--check',
    '--steps',
    '4',
    env={'XLA_FLAGS': '--xla_force_host_platform_device_count=8'},
  )
  assert result.returncode == 0, result.stdout + result.stderr
  assert 'same loss trajectory on 1 and 8 devices' in result.stdout


# (script, a module it needs that an extra installs, extra to name, extra arguments)
MISSING = [
  ('classify_names.py', 'faker', 'examples', ()),
  (
    'classify_names.py',
    'matplotlib',
    'examples',
    ('--steps', '1', '--ckpt-dir', '{tmp}', '--plot', '{tmp}/p.png'),
  ),
  ('sequential_digits.py', 'sklearn', 'examples', ()),
  ('forecast_sunspots.py', 'statsmodels', 'examples', ()),
  ('char_lm.py', 'optax', 'examples', ()),
  ('train_sharded.py', 'orbax', 'examples', ()),
  ('quickstart.py', 'optax', 'examples', ()),
  ('from_pytorch.py', 'torch', 'torch', ()),
]


@pytest.mark.parametrize('script, module, extra, args', MISSING, ids=[f'{s}-{m}' for s, m, _, _ in MISSING])
def test_example_without_its_extra_says_what_to_install(script, module, extra, args, tmp_path):
  """#15 E6: the pip command and the missing package, not an ImportError traceback."""
  result = run_example(script, *[arg.format(tmp=tmp_path) for arg in args], block=module)
  assert result.returncode == 1, result.stdout + result.stderr
  assert 'Traceback' not in result.stderr, result.stderr
  assert f"pip install -e '.[{extra}]'" in result.stderr
  assert f"'{module}'" in result.stderr
