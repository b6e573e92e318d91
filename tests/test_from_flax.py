"""from_flax: Flax's nn.RNN / nn.Bidirectional (linen and NNX) -> jaxrnn layers, against Flax itself."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest
from conftest import assert_trees_close
from conftest import slow
from flax import nnx

import jaxrnn
from jaxrnn.interop import from_flax
from jaxrnn.interop import from_flax_carry
from jaxrnn.interop import to_flax_carry

F, H = 3, 4
LINEN_CELLS = {
  'lstm': lambda **kw: nn.LSTMCell(H, **kw),
  'optimized_lstm': lambda **kw: nn.OptimizedLSTMCell(H, **kw),
  'gru': lambda **kw: nn.GRUCell(H, **kw),
  'simple_tanh': lambda **kw: nn.SimpleCell(H, **kw),
  'simple_relu': lambda **kw: nn.SimpleCell(H, activation_fn=nn.relu, **kw),
  'mgu': lambda **kw: nn.MGUCell(H, **kw),
}
NNX_CELLS = {
  'lstm': lambda rngs, **kw: nnx.LSTMCell(F, H, rngs=rngs, **kw),
  'optimized_lstm': lambda rngs, **kw: nnx.OptimizedLSTMCell(F, H, rngs=rngs, **kw),
  'gru': lambda rngs, **kw: nnx.GRUCell(F, H, rngs=rngs, **kw),
  'simple_tanh': lambda rngs, **kw: nnx.SimpleCell(F, H, rngs=rngs, **kw),
}
PRESETS = {'lstm': 'LSTM', 'optimized_lstm': 'LSTM', 'gru': 'GRU', 'simple_tanh': 'RNN', 'simple_relu': 'RNN'}


def _inputs(time_major=False, batch=2, steps=5, dtype=jnp.float32):
  x = jax.random.normal(jax.random.key(0), (batch, steps, F), dtype)
  return jnp.swapaxes(x, 0, 1) if time_major else x


def _noisy(tree, scale=0.3):
  """Flax initialises biases to zero: random values everywhere test the bias mapping too."""
  leaves, treedef = jax.tree.flatten(tree)
  keys = jax.random.split(jax.random.key(7), len(leaves))
  return treedef.unflatten(
    [a + scale * jax.random.normal(k, a.shape, a.dtype) for a, k in zip(leaves, keys, strict=True)]
  )


def _linen(name, bidirectional, time_major=False, **cell_fields):
  if bidirectional:
    return nn.Bidirectional(
      nn.RNN(LINEN_CELLS[name](**cell_fields)),
      nn.RNN(LINEN_CELLS[name](**cell_fields)),
      time_major=time_major,
    )
  return nn.RNN(LINEN_CELLS[name](**cell_fields), time_major=time_major)


def _flax_rows(carry, bidirectional):
  """Flax's final carry as the per-row list ``to_flax_carry`` gives (forward, then backward)."""
  return list(carry) if bidirectional else [carry]


def _check_layer_matches(layer, variables, run_flax, x, bidirectional, atol=1e-5, **kwargs):
  carry, y = run_flax(x, **kwargs)
  outputs, final = layer.apply(variables, x, **kwargs)
  assert_trees_close(outputs, y, atol=atol)
  assert_trees_close(to_flax_carry(final, layer), _flax_rows(carry, bidirectional), atol=atol)


@pytest.mark.parametrize(
  'name, bidirectional, time_major',
  [
    ('lstm', True, False),
    ('gru', True, True),
    ('simple_relu', False, True),
    ('mgu', True, False),
    # The same parameter tree as LSTMCell's, and SimpleCell's tanh twin: the slow tier.
    slow('optimized_lstm', False, True),
    slow('simple_tanh', False, False),
    *[slow(name, True, True) for name in ('lstm', 'optimized_lstm', 'simple_tanh', 'simple_relu', 'mgu')],
    *[slow(name, False, False) for name in ('lstm', 'gru', 'mgu')],
  ],
)
def test_linen_matches_flax(name, bidirectional, time_major):
  module = _linen(name, bidirectional, time_major)
  x = _inputs(time_major)
  flax_variables = _noisy(module.init(jax.random.key(1), x))
  layer, variables = from_flax(module, flax_variables)
  if name == 'mgu':
    assert isinstance(layer, jaxrnn.Recurrent) and isinstance(layer.cell, jaxrnn.MGUCell)
  else:
    assert type(layer).__name__ == PRESETS[name]
  assert (layer.bidirectional, layer.time_major, layer.num_layers) == (bidirectional, time_major, 1)
  _check_layer_matches(
    layer,
    variables,
    lambda x: module.apply(flax_variables, x, return_carry=True),
    x,
    bidirectional,
  )


@pytest.mark.parametrize(
  'name, bidirectional',
  [
    ('lstm', True),
    ('gru', False),
    slow('optimized_lstm', False),  # dense_i / dense_h as GRU's: the slow tier
    slow('simple_tanh', False),
    slow('lstm', False),
    slow('optimized_lstm', True),
    slow('gru', True),
    slow('simple_tanh', True),
  ],
)
def test_nnx_matches_flax(name, bidirectional):
  rngs = nnx.Rngs(1)
  if bidirectional:
    module = nnx.Bidirectional(nnx.RNN(NNX_CELLS[name](rngs)), nnx.RNN(NNX_CELLS[name](rngs)), rngs=rngs)
  else:
    module = nnx.RNN(NNX_CELLS[name](rngs), rngs=rngs)
  nnx.update(module, _noisy(nnx.state(module, nnx.Param)))
  x = _inputs()
  converted = from_flax(module)
  assert type(converted) is getattr(jaxrnn.nnx, PRESETS[name])
  assert converted.bidirectional == bidirectional
  carry, y = module(x, return_carry=True)
  outputs, final = converted(x)
  assert_trees_close(outputs, y, atol=1e-5)
  layer, _ = jaxrnn.interop.nnx_to_linen(converted)
  assert_trees_close(to_flax_carry(final, layer), _flax_rows(carry, bidirectional), atol=1e-5)


def test_linen_stacks_match_flax():
  """nn.Sequential and a list of bidirectional layers: one layer, num_layers=k."""
  x = _inputs()
  module = nn.Sequential([_linen('gru', True), _linen('gru', True)])
  flax_variables = _noisy(module.init(jax.random.key(1), x))
  layer, variables = from_flax(module, flax_variables)
  assert (layer.num_layers, layer.bidirectional) == (2, True)
  assert_trees_close(layer.apply(variables, x)[0], module.apply(flax_variables, x), atol=1e-5)
  # The same parameters as a list of modules with a list of their variables.
  parts = [{'params': flax_variables['params'][f'layers_{k}']} for k in range(2)]
  _, from_list = from_flax(list(module.layers), parts)
  assert_trees_close(from_list, variables, atol=0)


@pytest.mark.slow
def test_nnx_stack_matches_flax():
  x = _inputs()
  rngs = nnx.Rngs(2)
  stack = nnx.Sequential(*[nnx.RNN(nnx.LSTMCell(f, H, rngs=rngs), rngs=rngs) for f in (F, H)])
  converted = from_flax(stack)
  assert converted.num_layers == 2
  assert_trees_close(converted(x)[0], stack(x), atol=1e-5)


def test_seq_lengths_agree_at_valid_steps_and_differ_as_documented():
  """Valid steps and the carry of len > 0 agree; padding outputs and the len == 0 carry do not."""
  module = _linen('lstm', True)
  x = _inputs(batch=3)
  lengths = jnp.array([5, 2, 0])
  flax_variables = _noisy(module.init(jax.random.key(1), x))
  layer, variables = from_flax(module, flax_variables)
  (forward, backward), y = module.apply(flax_variables, x, seq_lengths=lengths, return_carry=True)
  outputs, final = layer.apply(variables, x, lengths)
  valid = (jnp.arange(5) < lengths[:, None])[..., None]
  assert_trees_close(jnp.where(valid, outputs, 0), jnp.where(valid, y, 0), atol=1e-5)
  rows = to_flax_carry(final, layer)
  first_two = lambda tree: jax.tree.map(lambda a: a[:2], tree)  # noqa: E731
  assert_trees_close(first_two(rows), first_two([forward, backward]), atol=1e-5)
  # jaxrnn: exact zeros at padding and the initial (zero) carry for length 0; Flax: neither.
  assert (outputs[1, 2:] == 0).all() and (outputs[2] == 0).all()
  assert (y[1, 2:] != 0).all()
  assert all((leaf[2] == 0).all() for leaf in jax.tree.leaves(rows))
  assert not (forward[1][2] == 0).all()


def test_shared_cell_in_both_directions_and_dtypes_carry_over():
  x = _inputs()
  cell = nn.GRUCell(H, dtype=jnp.bfloat16, param_dtype=jnp.float32)
  module = nn.Bidirectional(nn.RNN(cell), nn.RNN(cell))
  flax_variables = module.init(jax.random.key(1), x)
  assert list(flax_variables['params']) == ['forward_rnn']  # Flax stores the tied tree once
  layer, variables = from_flax(module, flax_variables)
  assert (layer.dtype, layer.param_dtype) == (jnp.bfloat16, jnp.float32)
  assert_trees_close(variables['params']['l0'], variables['params']['l0_reverse'], atol=0)
  outputs, _ = layer.apply(variables, x)
  assert outputs.dtype == jnp.bfloat16
  assert_trees_close(
    outputs.astype(jnp.float32), module.apply(flax_variables, x).astype(jnp.float32), atol=0.05
  )


def test_initial_carry_through_from_flax_carry():
  """Flax's per-direction (c, h) carries -> jaxrnn's LSTMState(h, c) [L*D, B, H] with from_flax_carry."""
  module = _linen('lstm', True)
  x = _inputs()
  flax_variables = _noisy(module.init(jax.random.key(1), x))
  layer, variables = from_flax(module, flax_variables)
  keys = jax.random.split(jax.random.key(3), 4)
  initial = tuple(
    (jax.random.normal(keys[2 * d], (2, H)), jax.random.normal(keys[2 * d + 1], (2, H))) for d in range(2)
  )
  _check_layer_matches(
    layer,
    variables,
    lambda x, initial_carry: module.apply(flax_variables, x, initial_carry=initial, return_carry=True),
    x,
    True,
    initial_carry=from_flax_carry(list(initial), layer),
  )


@pytest.mark.slow
@pytest.mark.parametrize('name', list(LINEN_CELLS))
def test_linen_float64_is_exact_to_rounding(name):
  with jax.enable_x64(True):
    module = _linen(name, True, param_dtype=jnp.float64)
    x = _inputs(dtype=jnp.float64)
    flax_variables = _noisy(module.init(jax.random.key(1), x))
    layer, variables = from_flax(module, flax_variables)
    assert layer.param_dtype == jnp.float64
    _check_layer_matches(
      layer, variables, lambda x: module.apply(flax_variables, x, return_carry=True), x, True, atol=1e-12
    )


class _MyGRUCell(nn.GRUCell):  # a subclass may change the step: not converted as a GRU
  pass


def _identity(x):
  return x


def _sum_merge(a, b):
  return a + b


ERRORS = {
  'gate_fn': (
    lambda: nn.RNN(nn.LSTMCell(H, gate_fn=nn.hard_sigmoid)),
    ValueError,
    r'LSTMCell.gate_fn=.*hard_sigmoid',
  ),
  'activation_fn': (
    lambda: nn.RNN(nn.GRUCell(H, activation_fn=_identity)),
    ValueError,
    r'activation_fn=.*_identity.*FlaxCell',
  ),
  'simple_activation': (
    lambda: nn.RNN(nn.SimpleCell(H, activation_fn=nn.gelu)),
    ValueError,
    r'SimpleCell.activation_fn',
  ),
  'residual': (lambda: nn.RNN(nn.SimpleCell(H, residual=True)), ValueError, r'residual=True'),
  'carry_init': (
    lambda: nn.RNN(nn.GRUCell(H, carry_init=nn.initializers.ones)),
    ValueError,
    r'carry_init=.*ones',
  ),
  'cell': (lambda: nn.RNN(nn.ConvLSTMCell(H, kernel_size=(3,))), TypeError, r'ConvLSTMCell.*FlaxCell'),
  'reverse': (
    lambda: nn.RNN(nn.GRUCell(H), reverse=True, keep_order=True),
    ValueError,
    r'reverse=True.*Bidirectional',
  ),
  'merge_fn': (
    lambda: nn.Bidirectional(nn.RNN(nn.GRUCell(H)), nn.RNN(nn.GRUCell(H)), merge_fn=_sum_merge),
    ValueError,
    r'merge_fn=.*_sum_merge',
  ),
  'directions_differ': (
    lambda: nn.Bidirectional(nn.RNN(nn.GRUCell(H)), nn.RNN(nn.LSTMCell(H))),
    ValueError,
    r'direction 1 is LSTMCell\(features=4.*layer 0 is GRUCell',
  ),
  'features_differ': (
    lambda: nn.Sequential([nn.RNN(nn.GRUCell(H)), nn.RNN(nn.GRUCell(H + 1))]),
    ValueError,
    r'layer 1 direction 0 is GRUCell\(features=5',
  ),
  'directions_in_stack': (
    lambda: nn.Sequential(
      [nn.RNN(nn.GRUCell(H)), nn.Bidirectional(nn.RNN(nn.GRUCell(H)), nn.RNN(nn.GRUCell(H)))]
    ),
    ValueError,
    r'layer 1 has 2 direction\(s\), layer 0 1',
  ),
  'subclass': (lambda: nn.RNN(_MyGRUCell(H)), TypeError, r'not subclasses.*_MyGRUCell.*FlaxCell'),
  'not_an_rnn': (lambda: nn.Dense(H), TypeError, r'converts nn.RNN, nn.Bidirectional.*got Dense'),
}


@pytest.mark.parametrize('case', list(ERRORS))
def test_named_errors(case):
  make, error, match = ERRORS[case]
  module = make()
  x = _inputs()
  # Zeros of the right shapes: tracing init, not compiling it, keeps these tests fast.
  shapes = jax.eval_shape(module.init, jax.random.key(0), x)
  variables = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
  with pytest.raises(error, match=match):
    from_flax(module, variables)


def test_named_errors_of_arguments():
  x = _inputs()
  rnn = nn.RNN(nn.GRUCell(H))
  with pytest.raises(ValueError, match=r'needs its `variables`'):
    from_flax(rnn)
  with pytest.raises(ValueError, match=r"must have .*'hn'.*got \['iz'\]"):
    from_flax(rnn, {'params': {'cell': {'iz': {}}}})
  with pytest.raises(ValueError, match=r"expected the nn.RNN's parameters \{'cell': ...\}, got \['l0'\]"):
    from_flax(rnn, {'params': {'l0': {}}})
  rngs = nnx.Rngs(0)
  nnx_rnn = nnx.RNN(nnx.GRUCell(F, H, rngs=rngs), rngs=rngs)
  with pytest.raises(ValueError, match=r'takes no `variables`'):
    from_flax(nnx_rnn, rnn.init(jax.random.key(0), x))
  with pytest.raises(ValueError, match=r'reverse=True'):
    from_flax(nnx.RNN(nnx.GRUCell(F, H, rngs=rngs), reverse=True, rngs=rngs))
  with pytest.raises(ValueError, match=r'SimpleCell.residual=True'):
    from_flax(nnx.RNN(nnx.SimpleCell(F, H, residual=True, rngs=rngs), rngs=rngs))
  with pytest.raises(ValueError, match=r'merge_fn=.*_sum_merge'):
    from_flax(nnx.Bidirectional(nnx_rnn, nnx_rnn, merge_fn=_sum_merge, rngs=rngs))
  with pytest.raises(TypeError, match=r'converts nnx.RNN, nnx.Bidirectional.*got Linear'):
    from_flax(nnx.Sequential(nnx_rnn, nnx.Linear(H, H, rngs=rngs)))
  with pytest.raises(ValueError, match=r'layer 1 has time_major=True, layer 0 False'):
    from_flax([nnx_rnn, nnx.RNN(nnx.GRUCell(H, H, rngs=rngs), time_major=True, rngs=rngs)])
  with pytest.raises(ValueError, match=r'nn.RNN\(variable_axes=.*is not the default'):
    from_flax(nn.RNN(nn.GRUCell(H), variable_axes={'params': 0}), {'params': {'cell': {}}})


class _MyNNXGRUCell(nnx.GRUCell):
  pass


def test_nnx_errors_give_nnx_advice():
  """There is no NNX FlaxCell: an NNX cell's error says how to build the NNX layer by hand."""
  rngs = nnx.Rngs(0)
  zeros = {'kernel_init': nnx.initializers.zeros, 'recurrent_kernel_init': nnx.initializers.zeros}  # fast
  unsupported = [
    (nnx.GRUCell(F, H, gate_fn=jax.nn.relu, **zeros, rngs=rngs), ValueError, r'GRUCell.gate_fn='),
    (nnx.SimpleCell(F, H, residual=True, **zeros, rngs=rngs), ValueError, r'SimpleCell.residual=True'),
    (_MyNNXGRUCell(F, H, **zeros, rngs=rngs), TypeError, r'not subclasses.*_MyNNXGRUCell'),
  ]
  for cell, error, match in unsupported:
    with pytest.raises(error, match=match) as info:
      from_flax(nnx.RNN(cell, rngs=rngs))
    assert 'jaxrnn.nnx.Recurrent(jaxrnn.linen.FlaxCell(<the linen version of the cell>)' in str(info.value)
    assert 'jaxrnn.Recurrent(jaxrnn.linen.FlaxCell(cell))' not in str(info.value)


def test_a_stack_mixing_linen_and_nnx_is_named():
  rngs = nnx.Rngs(0)
  zeros = {'kernel_init': nnx.initializers.zeros, 'recurrent_kernel_init': nnx.initializers.zeros}  # fast
  linen_rnn, nnx_rnn = nn.RNN(nn.GRUCell(H)), nnx.RNN(nnx.GRUCell(F, H, **zeros, rngs=rngs), rngs=rngs)
  variables = {'params': {'cell': {}}}  # never read: the mix is named first
  match = r'one stack mixes linen modules \(layer {}\) and NNX modules \(layer {}\)'
  with pytest.raises(TypeError, match=match.format(r'0 \(RNN\)', r'1 \(RNN\)')):
    from_flax([linen_rnn, nnx_rnn], [variables, variables])
  with pytest.raises(TypeError, match=match.format(r'1 \(RNN\)', r'0 \(RNN\)')):
    from_flax((nnx_rnn, linen_rnn))
