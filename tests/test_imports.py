"""The functional core imports neither flax nor torch; importing jaxrnn never imports torch, keras or onnx."""

import ast
import pathlib
import subprocess
import sys

import jaxrnn

SRC = pathlib.Path(jaxrnn.__file__).parent / '_src'
FLAX_FILES = {'linen_layers.py', 'nnx_layers.py', 'flax_interop.py', 'torch_interop.py'}


def imported_modules(path):
  tree = ast.parse(path.read_text())
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      yield from (alias.name.split('.')[0] for alias in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module:
      yield node.module.split('.')[0]


def test_core_does_not_import_flax_or_torch():
  for path in SRC.glob('*.py'):
    modules = set(imported_modules(path))
    assert 'torch' not in modules, path
    if path.name not in FLAX_FILES:
      assert 'flax' not in modules, path


def test_import_jaxrnn_does_not_import_torch_keras_or_onnx():
  code = (
    'import sys, jaxrnn, jaxrnn.linen, jaxrnn.interop; '
    'assert not {"torch", "keras", "onnx", "onnxruntime"} & set(sys.modules), "an optional library imported"'
  )
  subprocess.run([sys.executable, '-c', code], check=True)


def test_public_names_are_exported():
  for name in jaxrnn.__all__:
    assert getattr(jaxrnn, name) is not None
  assert jaxrnn.linen.LSTM is jaxrnn.LSTM


def test_flax_wrappers_hold_no_loop_or_mask_code():
  """linen and NNX layers only declare parameters: time loop and masking live in the core."""
  for name in ('linen_layers.py', 'nnx_layers.py'):
    text = (SRC / name).read_text()
    for token in ('lax.scan', 'jnp.where', 'jnp.flip', 'reverse_padded', 'seq_lengths <', 'swapaxes'):
      assert token not in text, (name, token)
