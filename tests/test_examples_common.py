"""The examples' shared plumbing (examples/common.py, examples/install_hint.py), on toy states.

A newcomer re-runs scripts, resumes with other flags and reads CI logs: checkpoints say where
they are and refuse what would mix two runs, `--resume` says what it resumed, progress in a log is
a few lines, and a missing optional package names the pip command that installs it.
"""

import pathlib
import re
import sys

import jax.numpy as jnp
import pytest

EXAMPLES = pathlib.Path(__file__).parent.parent / 'examples'
sys.path.insert(0, str(EXAMPLES))

pytest.importorskip('optax')
pytest.importorskip('orbax.checkpoint')
pytest.importorskip('tqdm')

import common  # noqa: E402
import install_hint  # noqa: E402


def toy_state(size=2):
  return {'w': jnp.zeros(size)}, {'count': jnp.zeros((), jnp.int32)}


def toy_step(params, opt_state, x):
  return (
    {'w': params['w'] + x},
    {'count': opt_state['count'] + 1},
    jnp.float32(1.0) / (1 + opt_state['count']),
  )


def toy_fit(steps, ckpt_dir=None, size=2, **kwargs):
  """`common.fit` on a 2-number state that counts its steps; each step adds 1 to every weight."""
  params, opt_state = toy_state(size)
  return common.fit(
    toy_step, params, opt_state, lambda rng, step: (1.0,), steps=steps, ckpt_dir=ckpt_dir, **kwargs
  )


# --- progress (#15 E5) ---


def progress_updates(captured):
  """Every line or carriage-return update either stream received."""
  return [part for part in re.split(r'[\r\n]+', captured.out + captured.err) if part.strip()]


def test_progress_in_a_log_is_a_few_plain_lines(capsys):
  """stdout and stderr are not terminals under pytest, as in CI: at most a line per 10%."""
  assert not sys.stderr.isatty()
  toy_fit(200)
  updates = progress_updates(capsys.readouterr())
  progress = [u for u in updates if u.startswith('train:')]
  assert 5 <= len(progress) <= 11, updates
  assert not any('|' in u for u in updates), updates  # no bar drawn into the log
  assert re.match(r'train: step 200/200 \(100%\), loss \d\.\d{4}', progress[-1]), progress[-1]


def test_progress_on_a_terminal_is_a_bar(monkeypatch, capsys):
  monkeypatch.setattr(sys.stderr, 'isatty', lambda: True, raising=False)
  monkeypatch.delenv('CI', raising=False)
  bar = common.progress(10)
  assert isinstance(bar, common.ProgressBar)
  bar.close()


def test_progress_with_ci_set_is_plain_lines(monkeypatch):
  monkeypatch.setattr(sys.stderr, 'isatty', lambda: True, raising=False)
  monkeypatch.setenv('CI', 'true')
  assert isinstance(common.progress(10), common.ProgressLines)


# --- checkpoints: where, re-runs, other settings (#15 E3) and what --resume did (#15 E4) ---


def test_fit_says_where_it_writes_checkpoints(tmp_path, capsys):
  toy_fit(2, tmp_path / 'run')
  assert f'checkpoints: {tmp_path / "run"}' in capsys.readouterr().out


def test_rerun_into_a_checkpoint_directory_refuses_instead_of_skipping_saves(tmp_path, capsys):
  toy_fit(4, tmp_path / 'run', ckpt_every=2)
  with pytest.raises(SystemExit) as exit_info:
    toy_fit(2, tmp_path / 'run')
  message = str(exit_info.value.code)
  assert str(tmp_path / 'run') in message and '--resume' in message and '--ckpt-dir' in message
  assert 'steps 2, 4' in message
  assert sorted(p.name for p in (tmp_path / 'run').iterdir() if p.name.isdigit()) == ['2', '4']


def test_resume_says_what_it_resumed(tmp_path, capsys):
  toy_fit(4, tmp_path / 'run')
  capsys.readouterr()
  params, opt_state, losses = toy_fit(6, tmp_path / 'run', resume=True)
  out = capsys.readouterr().out
  assert 'resumed from step 4' in out
  assert 'trained steps 5..6' in out
  assert len(losses) == 2 and float(params['w'][0]) == 6.0 and int(opt_state['count']) == 6


def test_resume_of_a_finished_run_says_so_instead_of_an_empty_range(tmp_path, capsys):
  toy_fit(4, tmp_path / 'run')
  params, _, losses = toy_fit(4, tmp_path / 'run', resume=True)
  out = capsys.readouterr().out
  assert 'resumed from step 4' in out
  assert 'already reached step 4 (--steps 4): nothing to train' in out
  assert '5..4' not in out and not losses and float(params['w'][0]) == 4.0


def test_resume_without_a_checkpoint_says_it_starts_from_scratch(tmp_path, capsys):
  toy_fit(2, tmp_path / 'empty', resume=True)
  out = capsys.readouterr().out
  assert 'no checkpoint to resume in' in out and 'resumed from step' not in out


def test_resume_with_other_settings_refuses_and_names_them(tmp_path):
  toy_fit(2, tmp_path / 'run', settings={'hidden': 8, 'lr': 0.1, 'steps': 2, 'plot': 'a.png'})
  with pytest.raises(SystemExit) as exit_info:
    settings = {'hidden': 16, 'lr': 0.1, 'steps': 4, 'plot': 'b.png'}
    toy_fit(4, tmp_path / 'run', size=3, resume=True, settings=settings)
  message = str(exit_info.value.code)
  assert '--hidden 8' in message and '--hidden 16' in message
  assert '--lr' not in message and '--steps' not in message and '--plot' not in message
  assert '--ckpt-dir' in message


def test_resume_into_another_model_refuses_instead_of_an_orbax_shape_error(tmp_path):
  """The same flags can still give other shapes (e.g. another vocabulary): compared too."""
  toy_fit(2, tmp_path / 'run')
  with pytest.raises(SystemExit) as exit_info:
    toy_fit(4, tmp_path / 'run', resume=True, size=3)
  message = str(exit_info.value.code)
  assert "['params']['w']" in message and '(2,)' in message and '(3,)' in message


# --- a missing optional package (#15 E6) ---


def test_missing_optional_module_exits_with_the_install_command(monkeypatch):
  monkeypatch.setitem(sys.modules, 'sklearn', None)  # as if scikit-learn were not installed
  with pytest.raises(SystemExit) as exit_info:
    try:
      from sklearn.datasets import load_digits  # noqa: F401
    except ModuleNotFoundError as error:
      install_hint.exit_if_optional(error)
  message = str(exit_info.value.code)
  assert "pip install -e '.[examples]'" in message
  assert 'scikit-learn' in message and sys.executable in message


def test_missing_torch_names_the_torch_extra(monkeypatch):
  monkeypatch.setitem(sys.modules, 'torch', None)
  with pytest.raises(SystemExit, match=re.escape("pip install -e '.[torch]'")):
    try:
      import torch  # noqa: F401
    except ModuleNotFoundError as error:
      install_hint.exit_if_optional(error, extra='torch')


def test_a_module_no_extra_installs_is_not_explained_away(monkeypatch):
  monkeypatch.setitem(sys.modules, 'not_an_optional_package', None)
  with pytest.raises(ModuleNotFoundError):
    try:
      import not_an_optional_package  # noqa: F401
    except ModuleNotFoundError as error:
      install_hint.exit_if_optional(error)


def test_require_checks_before_the_work_starts(monkeypatch):
  monkeypatch.setitem(sys.modules, 'matplotlib', None)
  with pytest.raises(SystemExit, match='matplotlib'):
    install_hint.require('matplotlib')
  install_hint.require('numpy')  # installed: nothing happens
