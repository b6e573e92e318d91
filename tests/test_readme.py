"""The README's linen and NNX snippets run and agree on shapes."""

import pathlib
import re

import jax
import jax.numpy as jnp

README = (pathlib.Path(__file__).parent.parent / 'README.md').read_text()


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
