"""Turns a missing optional package into the pip command that installs it (standard library only).

The examples need packages that `pip install jaxrnn` does not bring (the `examples` and `torch`
extras of pyproject.toml). Without them a newcomer would meet an ImportError traceback; each
example imports them inside ``try`` and hands a ``ModuleNotFoundError`` to `exit_if_optional`.
"""

import importlib.util
import pathlib
import sys

# The module a script imports -> the distribution pip installs; all come with the extras.
DISTRIBUTIONS = {
  'jax': 'jax',
  'flax': 'flax',
  'chex': 'chex',
  'numpy': 'numpy',
  'jaxrnn': 'jaxrnn',
  'optax': 'optax',
  'orbax': 'orbax-checkpoint',
  'tqdm': 'tqdm',
  'matplotlib': 'matplotlib',
  'flatbuffers': 'flatbuffers',
  'faker': 'Faker',
  'sklearn': 'scikit-learn',
  'statsmodels': 'statsmodels',
  'torch': 'torch',
}


def install_command(module, extra='examples'):
  """Returns the message that names ``module``'s package and the command that installs ``extra``."""
  top = module.partition('.')[0]
  script = pathlib.Path(sys.argv[0]).name or 'this example'
  return (
    f"error: {script} needs the package {DISTRIBUTIONS.get(top, top)} (module '{top}'), which is not "
    f'installed in this Python ({sys.executable}). Install the `{extra}` extra, which brings it, from '
    f"the repository's root:\n\n    python -m pip install -e '.[{extra}]'\n"
  )


def exit_if_optional(error, extra='examples'):
  """Exits with `install_command` if ``error`` is about a package ``extra`` installs; else re-raises it.

  Args:
    error: the ``ModuleNotFoundError`` an import raised.
    extra: the extra of pyproject.toml that installs everything the script needs.
  """
  if (error.name or '').partition('.')[0] in DISTRIBUTIONS:
    raise SystemExit(install_command(error.name, extra)) from None
  raise error


def require(*modules, extra='examples'):
  """Exits with `install_command` unless every module can be imported (found, not imported).

  For a package a script imports only at the end (a plot after minutes of training).
  """
  for module in modules:
    if importlib.util.find_spec(module) is None:
      raise SystemExit(install_command(module, extra))
