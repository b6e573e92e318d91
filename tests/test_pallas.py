"""``loop='pallas'``: the forward and backward loops as Pallas kernels (jaxrnn/_src/pallas_loop.py).

On this CPU the kernels run in Pallas' interpret mode, which executes the kernel
body as written (blocks, padding to powers of two, state buffers, step order),
so values and gradients are checked against the scan loop (itself checked
against PyTorch). What only a GPU can check is that Triton accepts the
kernels: ``test_lowers_to_triton`` lowers them for CUDA here (Pallas to Triton
IR: shapes, dtypes, supported operations), and ``python -m benchmarks.gpu``
runs and times them on a GPU.
"""

import json
import pathlib
import subprocess
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_trees_close
from conftest import make_layer
from conftest import random_variables
from conftest import slow

import jaxrnn
from jaxrnn._src import pallas_loop

B, T, F = 5, 7, 3  # B = 5 pads to one 16-row tile


def _value_and_grad(layer, variables, x, lengths):
  def loss(v, x):
    outputs, final = layer.apply(v, x, lengths)
    outputs = outputs.astype(jnp.float32)
    return jnp.sum(outputs * jnp.cos(outputs)) + sum(
      jnp.sum(jnp.sin(leaf.astype(jnp.float32))) for leaf in jax.tree.leaves(final)
    )

  (value, grads) = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(variables, x)
  return value, grads, jax.jit(layer.apply)(variables, x, lengths)


CASES = [  # kind, layer options, hidden size, padded
  ('lstm', {'bidirectional': True}, 20, True),
  ('gru', {}, 20, True),
  ('rnn_relu', {}, 20, True),
  slow('gru', {'bidirectional': True}, 20, True),
  slow('rnn_tanh', {'bidirectional': True}, 20, True),
  slow('lstm', {}, 20, False),  # no lengths: the unmasked kernels
  slow('gru', {}, 20, False),
  # H = 100 pads to 128 units: two column blocks per step; two layers; checkpointed chunks
  slow('lstm', {'num_layers': 2, 'bidirectional': True, 'checkpoint_every': 3}, 100, True),
  slow('gru', {'num_layers': 2, 'bidirectional': True, 'checkpoint_every': 3}, 100, True),
  slow('rnn_tanh', {'bidirectional': True}, 100, True),
]


@pytest.mark.parametrize(('kind', 'options', 'hidden', 'padded'), CASES)
def test_equals_scan_loop(rng, kind, options, hidden, padded):
  x = jnp.asarray(rng.normal(size=(B, T, F)), jnp.float32)
  lengths = jnp.array([7, 0, 3, 5, 1]) if padded else None
  # The Pallas loop hoists the input projection: so does the loop it is compared with.
  scan = make_layer(kind, hidden_size=hidden, loop='scan', hoist_input_projection=True, **options)
  variables = random_variables(scan, F, rng, scale=hidden**-0.5)  # PyTorch's initial range
  want = _value_and_grad(scan, variables, x, lengths)
  got = _value_and_grad(scan.clone(loop='pallas'), variables, x, lengths)
  chex.assert_trees_all_close(got, want, atol=1e-5, rtol=1e-5)  # float32 sums in another order
  if padded:  # padded steps output exact zeros
    outputs = np.asarray(got[2][0])
    assert not outputs[1].any() and not outputs[2, 3:].any()


@pytest.mark.slow
@pytest.mark.parametrize('kind', ['lstm', 'gru'])
def test_bfloat16_equals_scan_loop(rng, kind):
  x = jnp.asarray(rng.normal(size=(B, T, F)), jnp.bfloat16)
  lengths = jnp.array([7, 0, 3, 5, 1])
  scan = make_layer(kind, hidden_size=20, loop='scan', hoist_input_projection=True, dtype=jnp.bfloat16)
  variables = random_variables(scan, F, rng)
  want = _value_and_grad(scan, variables, x, lengths)
  got = _value_and_grad(scan.clone(loop='pallas'), variables, x, lengths)
  # The same rounding to bfloat16 at each step; sums in a different order.
  assert_trees_close(jax.tree.map(lambda a: a.astype(jnp.float32), got), want, atol=2e-2)


def test_nnx_layer(rng):
  from flax import nnx

  x = jnp.asarray(rng.normal(size=(B, T, F)), jnp.float32)
  lengths = jnp.array([7, 0, 3, 5, 1])
  layer = jaxrnn.nnx.GRU(F, 6, loop='pallas', rngs=nnx.Rngs(0))
  scan = jaxrnn.nnx.GRU(F, 6, hoist_input_projection=True, rngs=nnx.Rngs(0))
  assert_trees_close(layer(x, lengths), scan(x, lengths), atol=1e-5)


@pytest.mark.parametrize('kind', ['lstm', 'gru', slow('rnn_tanh'), slow('rnn_relu')])
@pytest.mark.parametrize('dtype', [jnp.float32, slow(jnp.bfloat16)])
def test_lowers_to_triton(monkeypatch, kind, dtype):
  """The kernels lower to Triton for CUDA (S1's shapes: H = 320 pads to 512 units, in blocks of 16 or 32)."""
  monkeypatch.setattr(pallas_loop, '_FORCE_COMPILED', True)
  layer = make_layer(kind, hidden_size=320, loop='pallas', dtype=dtype, bidirectional=True)
  x = jnp.zeros((64, 100, 123), dtype)
  lengths = jnp.full((64,), 100)
  variables = jax.eval_shape(layer.init, jax.random.key(0), x, lengths)
  grad = jax.jit(jax.grad(lambda v: jnp.sum(layer.apply(v, x, lengths)[0].astype(jnp.float32))))
  text = grad.trace(variables).lower(lowering_platforms=('cuda',)).as_text()
  # Forward and backward kernels of both directions, no interpreted kernel.
  assert text.count('__gpu$xla.gpu.triton') == 4


def test_padded_size():
  assert [pallas_loop.padded_size(n) for n in (1, 16, 17, 64, 100, 320, 512)] == [
    16,
    16,
    32,
    64,
    128,
    512,
    512,
  ]


def test_auto_keeps_the_scan_loop():
  layer = jaxrnn.LSTM(4)
  assert layer.loop == 'auto' and not layer.config.use_pallas
  x = jnp.ones((2, 3, 4))
  variables = layer.init(jax.random.key(0), x)
  assert 'pallas_call' not in str(jax.make_jaxpr(layer.apply)(variables, x))
  assert 'pallas_call' in str(jax.make_jaxpr(layer.clone(loop='pallas').apply)(variables, x))


@pytest.mark.parametrize(
  ('options', 'message'),
  [
    ({'loop': 'cuda'}, "`loop` must be one of ('auto', 'scan', 'pallas'), got 'cuda'"),
    ({'loop': 'pallas', 'fused_backward': False}, "`loop='pallas'` does not support `fused_backward=False`"),
    ({'loop': 'pallas', 'remat': True}, "`loop='pallas'` does not support `remat=True`"),
    ({'loop': 'pallas', 'recurrent_dropout': 0.1}, "`loop='pallas'` does not support `recurrent_dropout`"),
    ({'loop': 'pallas', 'proj_size': 2}, "`loop='pallas'` does not support `proj_size`"),
  ],
)
def test_unsupported_options(options, message):
  with pytest.raises(ValueError, match=message.replace('(', r'\(').replace(')', r'\)')):
    jaxrnn.LSTM(4, **options)


def test_unsupported_cells_and_packing():
  with pytest.raises(ValueError, match=r"`loop='pallas'` does not support MinGRUCell .*built-in"):
    jaxrnn.Recurrent(jaxrnn.MinGRUCell(4), loop='pallas')
  with pytest.raises(ValueError, match=r"`loop='pallas'` does not support GRUCell "):
    jaxrnn.GRU(4, reset_after=False, loop='pallas')
  layer = jaxrnn.LSTM(4, loop='pallas')
  x, segment_ids = jnp.ones((1, 6, 3)), jnp.array([[1, 1, 2, 2, 2, 0]])
  variables = layer.init(jax.random.key(0), x)
  with pytest.raises(ValueError, match=r"`loop='pallas'` does not run packed sequences"):
    layer.apply(variables, x, segment_ids=segment_ids)


@pytest.mark.slow
def test_tuning_script_runs_on_cpu(tmp_path):
  """benchmarks/pallas_tune.py, the GPU tuning run, on tiny shapes in interpret mode: it cannot rot."""
  root = pathlib.Path(__file__).parent.parent
  command = [sys.executable, '-m', 'benchmarks.pallas_tune', '--allow-cpu', '--quick', '--shapes', 'S5']
  subprocess.run([*command, '--out', str(tmp_path)], cwd=root, check=True, capture_output=True, timeout=300)
  (report,) = tmp_path.glob('pallas-*.json')
  results = json.loads(report.read_text())['results']['S5 float32']
  assert set(results) == {'scan', 'pallas[defaults]', 'pallas[BATCH_TILE=32]'}
  assert all(r['ms'] > 0 and 'error' not in r for r in results.values())
