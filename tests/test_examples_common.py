"""The examples' shared plumbing: a missing optional package names the pip command that installs it."""

import pathlib
import re
import sys

import pytest

EXAMPLES = pathlib.Path(__file__).parent.parent / 'examples'
sys.path.insert(0, str(EXAMPLES))

import install_hint  # noqa: E402

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
