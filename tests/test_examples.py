"""Examples that make a claim a test can check, and that behave when a newcomer re-runs them."""

import importlib
import os
import pathlib
import re
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


def import_example(name, *needs):
  """Imports examples/``name``.py as a module, skipping the test without the packages it ``needs``."""
  for module in needs:
    pytest.importorskip(module)
  sys.path.insert(0, str(EXAMPLES))
  try:
    return importlib.import_module(name)
  finally:
    sys.path.remove(str(EXAMPLES))


@pytest.mark.slow  # two training runs in a subprocess; CI also runs the example itself
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


@pytest.mark.slow  # the library tests cover the layer; this checks the example
def test_classify_names_packed_evaluation_is_the_padded_one():
  """classify_names.py --pack: the same params give each held-out name the same logits packed as padded."""
  classify_names = import_example('classify_names', 'faker', 'optax', 'orbax.checkpoint', 'tqdm')
  import jax
  import numpy as np

  data = classify_names.NamesData()
  model = classify_names.NameClassifier(data.vocab, len(data.languages), hidden=16)
  params = model.init(jax.random.key(0), *data.batch(data.train_index[:2])[:2])
  index = np.random.default_rng(0).permutation(data.test_index)[:200]  # any order: labels follow positions
  chars, lengths, targets = data.batch(index)
  padded = model.apply(params, chars, lengths)
  chars, segment_ids, positions, packed_targets = data.packed_batch(index, num_rows=40, max_segments=12)
  assert chars.shape == (40, data.max_len) and (segment_ids[-1] == 0).all()  # padding rows to num_rows
  assert int(segment_ids.max()) > 1  # several names to a row
  packed = model.apply(params, chars, segment_ids=segment_ids, num_segments=12, positions=positions)
  np.testing.assert_array_equal(packed_targets, targets)
  np.testing.assert_allclose(packed, padded, atol=1e-5)
  np.testing.assert_array_equal(np.argmax(packed, -1), np.argmax(padded, -1))  # the same accuracy


@pytest.mark.slow  # the library tests cover the layer; this checks the example
def test_sequential_digits_mingru_is_the_same_model_in_both_scan_modes():
  """sequential_digits.py --cell mingru: --scan-mode associative and sequential give the same logits."""
  sequential_digits = import_example('sequential_digits', 'sklearn', 'optax', 'orbax.checkpoint', 'tqdm')
  import jax
  import numpy as np

  rows = jax.random.uniform(jax.random.key(0), (16, 8, 8))
  models = {
    mode: sequential_digits.RowReader(hidden=16, cell='mingru', scan_mode=mode)
    for mode in ('associative', 'sequential')
  }
  params = models['associative'].init(jax.random.key(1), rows)
  assert sorted(params['params']['Recurrent_0']) == ['l0', 'l1']  # MINGRU_LAYERS
  logits = {mode: model.apply(params, rows) for mode, model in models.items()}
  assert logits['associative'].shape == (16, 10)
  np.testing.assert_allclose(logits['associative'], logits['sequential'], atol=1e-5)


@pytest.mark.slow  # two training runs in a subprocess; CI also runs the example with --pack
def test_classify_names_pack_trains_resumes_and_reports(tmp_path):
  """--pack checkpoints and resumes, and ends with the packed speed and held-out accuracy line."""
  for module in ('faker', 'matplotlib'):  # the examples extra; CI's test stage has only `test`
    pytest.importorskip(module)
  args = ('--ckpt-dir', str(tmp_path / 'ckpt'), '--plot', str(tmp_path / 'p.png'), '--hidden', '16', '--pack')
  first = run_example('classify_names.py', '--steps', '3', *args)
  assert first.returncode == 0, first.stdout + first.stderr
  resumed = run_example('classify_names.py', '--steps', '5', '--resume', *args)
  assert resumed.returncode == 0, resumed.stdout + resumed.stderr
  assert 'resumed from step 3' in resumed.stdout
  assert 'packed evaluation: the same predictions on all' in resumed.stdout
  last = resumed.stdout.strip().splitlines()[-1]
  assert re.fullmatch(
    r'packed: \d+ sequences/s \(padding \d+% of steps\), held-out accuracy [01]\.\d{3}; to compare, run without --pack',
    last,
  ), last
  padded = run_example('classify_names.py', '--steps', '6', '--resume', *args[:-1])  # not the same run
  assert padded.returncode != 0 and '--pack True' in padded.stderr, padded.stderr


# The smallest char_lm there is: it needs only the `test` extra's packages.
TINY_CHAR_LM = ('--hidden', '8', '--layers', '1', '--seq-len', '16', '--batch-size', '4')
TINY_CHAR_LM += ('--max-chars', '20000', '--gen-len', '2', '--ckpt-every', '1')


@pytest.mark.slow  # four char_lm runs; CI's example runs also resume from a checkpoint
def test_checkpointing_example_refuses_to_mix_runs_and_says_what_it_resumed(tmp_path):
  """#15 E3, E4 on a real script: where it writes, no silent skip, no orbax shape error."""
  pytest.importorskip('optax')
  pytest.importorskip('orbax.checkpoint')
  ckpt = tmp_path / 'char_lm'

  first = run_example('char_lm.py', '--steps', '2', '--ckpt-dir', str(ckpt), *TINY_CHAR_LM)
  assert first.returncode == 0, first.stdout + first.stderr
  assert f'checkpoints: {ckpt}' in first.stdout

  again = run_example('char_lm.py', '--steps', '3', '--ckpt-dir', str(ckpt), *TINY_CHAR_LM)
  assert again.returncode != 0 and 'Traceback' not in again.stderr, again.stderr
  assert '--resume' in again.stderr and '--ckpt-dir' in again.stderr and str(ckpt) in again.stderr

  other = run_example(
    'char_lm.py', '--steps', '3', '--ckpt-dir', str(ckpt), '--resume', *TINY_CHAR_LM[2:], '--hidden', '16'
  )
  assert other.returncode != 0 and 'Traceback' not in other.stderr, other.stderr
  assert '--hidden 8' in other.stderr and '--hidden 16' in other.stderr

  done = run_example('char_lm.py', '--steps', '2', '--ckpt-dir', str(ckpt), '--resume', *TINY_CHAR_LM)
  assert done.returncode == 0, done.stdout + done.stderr
  assert 'resumed from step 2' in done.stdout
  assert 'already reached step 2 (--steps 2): nothing to train' in done.stdout
  assert 'trained steps' not in done.stdout


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


# The default run: one example per extra; the slow tier: every example.
FAST_MISSING = [('classify_names.py', 'faker'), ('from_pytorch.py', 'torch')]


@pytest.mark.parametrize(
  'script, module, extra, args',
  [case if case[:2] in FAST_MISSING else pytest.param(*case, marks=pytest.mark.slow) for case in MISSING],
  ids=[f'{s}-{m}' for s, m, _, _ in MISSING],
)
def test_example_without_its_extra_says_what_to_install(script, module, extra, args, tmp_path):
  """#15 E6: the pip command and the missing package, not an ImportError traceback."""
  result = run_example(script, *[arg.format(tmp=tmp_path) for arg in args], block=module)
  assert result.returncode == 1, result.stdout + result.stderr
  assert 'Traceback' not in result.stderr, result.stderr
  assert f"pip install -e '.[{extra}]'" in result.stderr
  assert f"'{module}'" in result.stderr
