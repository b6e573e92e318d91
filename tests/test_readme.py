"""The README as a newcomer meets it: set-up first, and the linen and NNX snippets run."""

import pathlib
import re

import jax
import jax.numpy as jnp

ROOT = pathlib.Path(__file__).parent.parent
README = (ROOT / 'README.md').read_text()


def fenced_blocks(language):
  """Returns ``(line number, text)`` of every fenced block of ``language``, in order."""
  return [
    (README.count('\n', 0, match.start()) + 2, match.group(1))
    for match in re.finditer(rf'^```{language}\n(.*?)^```', README, flags=re.S | re.M)
  ]


def python_blocks():
  return re.findall(r'```python\n(.*?)```', README, flags=re.S)


def test_linen_and_nnx_snippets_run():
  snippets = [b for b in python_blocks() if 'class Tagger' in b]
  assert len(snippets) == 2
  logits = []
  for code in snippets:
    namespace = {
      'key': jax.random.key(0),
      'tokens': jnp.zeros((2, 7), jnp.int32),
      'lengths': jnp.array([7, 3]),
    }
    exec(code, namespace)
    logits.append(namespace['logits'])
  assert logits[0].shape == logits[1].shape == (2, 7, 5)
  assert float(abs(logits[0][1, 3:]).max()) == float(
    abs(logits[0][1, 3]).max()
  )  # padding rows equal Dense(0)


def test_setup_comes_first():
  """Before any code, the README says how to get a working environment, and with which Python."""
  first_heading = re.search(r'^## (.*)$', README, flags=re.M).group(1)
  assert first_heading == 'Set-up'
  first_block = README[README.index('```') :]
  assert first_block.startswith('```bash\n')
  setup = README[README.index('## Set-up') : README.index('\n## ', README.index('## Set-up') + 1)]
  assert 'git clone' in setup
  assert 'python3 -m venv' in setup and 'activate' in setup
  minimum = re.search(r'requires-python = ">=(\d+\.\d+)"', (ROOT / 'pyproject.toml').read_text()).group(1)
  assert f'Python {minimum}' in setup


def test_the_two_commands_are_the_ones_ci_runs():
  """The README's commands are textually those of .ci/run, in the set-up section."""
  example = "python -m pip install -e '.[examples]' && python examples/classify_names.py"
  tests = "python -m pip install torch==2.13.0 && python -m pip install -e '.[test]' && python -m pytest"
  bash_blocks = [block.strip() for _, block in fenced_blocks('bash')]
  assert example in bash_blocks and tests in bash_blocks
  assert tests in (ROOT / '.ci' / 'run').read_text().splitlines()
  setup_end = README.index('\n## ', README.index('## Set-up') + 1)
  assert README.index(example) < setup_end and README.index(tests) < setup_end
