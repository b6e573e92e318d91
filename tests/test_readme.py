"""The README as a newcomer meets it: set-up first, then code blocks that run as pasted.

Every ```python block is fed, in order, line by line, to one `code.InteractiveConsole` (what the
`python` prompt runs), so a name defined in no earlier block, or a blank line inside a class body
(it ends the class at the prompt), fails here. Doctest blocks are typed without their prompts and
their printed results compared (so README.md needs no doctest run of its own).
"""

import code
import contextlib
import doctest
import io
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).parent.parent
README = (ROOT / 'README.md').read_text()


def fenced_blocks(language):
  """Returns ``(line number, text)`` of every fenced block of ``language``, in order."""
  return [
    (README.count('\n', 0, match.start()) + 2, match.group(1))
    for match in re.finditer(rf'^```{language}\n(.*?)^```', README, flags=re.S | re.M)
  ]


def typed_lines(block):
  """Returns ``(lines typed at the prompt, expected output)``; a block without ``>>>`` is typed as is."""
  if not re.search(r'^>>>', block, flags=re.M):
    return block.splitlines(), None
  typed, expected = [], []
  for line in block.splitlines():
    if line.startswith(('>>> ', '... ')) or line in ('>>>', '...'):
      typed.append(line[4:])
    elif line.strip():
      expected.append(line)
  return typed, '\n'.join(expected) + '\n' if expected else ''


class Prompt(code.InteractiveConsole):
  """The `python` prompt, except that an error raises instead of being printed."""

  def showsyntaxerror(self, filename=None, **kwargs):
    raise  # called while the SyntaxError is being handled: re-raises it

  def showtraceback(self):
    raise


def paste(prompt, line_number, block):
  """Types ``block`` at ``prompt`` and checks what a doctest block says it prints."""
  typed, expected = typed_lines(block)
  printed = io.StringIO()
  with contextlib.redirect_stdout(printed):
    for offset, line in enumerate([*typed, '']):  # a final empty line ends an open block
      try:
        prompt.push(line)
      except Exception as error:
        raise AssertionError(
          f'README.md, block at line {line_number}, typed line {offset + 1} {line!r}: '
          f'{type(error).__name__}: {error}'
        ) from error
  if expected is not None:
    flags = doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS
    assert doctest.OutputChecker().check_output(expected, printed.getvalue(), flags), (
      f'README.md, block at line {line_number}: printed\n{printed.getvalue()}\ninstead of\n{expected}'
    )


def test_every_python_block_runs_as_pasted_in_order():
  blocks = fenced_blocks('python')
  assert len(blocks) >= 5
  prompt = Prompt()
  for line_number, block in blocks:
    paste(prompt, line_number, block)


def test_prompt_simulation_catches_what_the_prompt_rejects():
  with pytest.raises(AssertionError, match='NameError'):
    paste(Prompt(), 1, 'y = undefined_name + 1\n')
  with pytest.raises(AssertionError, match='IndentationError'):
    paste(Prompt(), 1, 'class A:\n  x = 1\n\n  y = 2\n')
  with pytest.raises(AssertionError, match='printed'):
    paste(Prompt(), 1, '>>> 1 + 1\n3\n')


@pytest.mark.parametrize('flavour', ['linen', 'nnx'])
def test_each_tagger_snippet_runs_on_its_own(flavour):
  """Each side of the linen/NNX table defines what it uses, and the two give the same shapes."""
  (line_number, block) = [(n, b) for n, b in fenced_blocks('python') if 'class Tagger' in b][
    ['linen', 'nnx'].index(flavour)
  ]
  assert ('nnx.Module' in block) == (flavour == 'nnx')
  prompt = Prompt()
  paste(prompt, line_number, block)
  tokens, lengths, logits = (prompt.locals[name] for name in ('tokens', 'lengths', 'logits'))
  assert logits.shape == (*tokens.shape, 5)
  short = int(lengths.argmin())
  padding = logits[short, int(lengths[short]) :]
  assert padding.shape[0] >= 2
  assert float(abs(padding - padding[0]).max()) == 0.0  # the head of exact zeros: its bias


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
