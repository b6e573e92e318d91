"""The parallel-scan cells (SPEC §12): MinGRUCell, MinLSTMCell, LRUCell, RGLRUCell.

Oracles: a float64 NumPy step per cell written here from the papers' equations
(sharing no code with the cells), a per-sequence Python loop over it for the
padded bidirectional layer, and the cells' own ``linear_form`` /
``log_linear_form`` / ``readout`` hooks checked against their ``__call__``.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import QUICK_COMPILE
from conftest import slow

import jaxrnn

B, T, F = 3, 6, 4


def sigmoid(v):
  return 1.0 / (1.0 + np.exp(-v))


def positive_candidate(v):
  """The papers' ``g``: ``v + 0.5`` for ``v >= 0``, ``sigmoid(v)`` below."""
  return np.where(v >= 0, v + 0.5, sigmoid(v))


def softplus(v):
  return np.log1p(np.exp(v))


def numpy_step(cell, p, h, x):
  """Returns ``(h', y)`` of one step of ``cell``'s paper equations in float64 (``p``: NumPy params)."""
  if isinstance(cell, (jaxrnn.MinGRUCell, jaxrnn.MinLSTMCell)):
    n = cell.features
    pre = x @ p['w_ih'] + p.get('b_ih', 0.0)
    blocks = [pre[..., k * n : (k + 1) * n] for k in range(pre.shape[-1] // n)]
    candidate = positive_candidate(blocks[-1]) if cell.log_space else blocks[-1]
    if isinstance(cell, jaxrnn.MinGRUCell):  # Feng et al. 2024, minGRU
      z = sigmoid(blocks[0])
      h = (1 - z) * h + z * candidate
    else:  # minLSTM, normalised gates
      f, i = sigmoid(blocks[0]), sigmoid(blocks[1])
      h = f / (f + i) * h + i / (f + i) * candidate
    return h, h
  if isinstance(cell, jaxrnn.LRUCell):  # Orvieto et al. 2023, the paper's reference forward
    lam = np.exp(-np.exp(p['nu_log']) + 1j * np.exp(p['theta_log']))
    b_matrix = p['B_re'] + 1j * p['B_im']
    c_matrix = p['C_re'] + 1j * p['C_im']
    h = lam * h + np.exp(p['gamma_log']) * (x @ b_matrix)
    skip = x @ p['D'] if p['D'].ndim == 2 else p['D'] * x  # F != H: a dense [F, H] skip
    return h, (h @ c_matrix).real + skip

  # RG-LRU (De et al. 2024): block-diagonal gates, a = sigma(-Lambda)^(c r); F != H projects x first
  if 'input_proj' in p:
    x = x @ p['input_proj']['w']

  def block_diagonal(q):
    heads, size = q['w'].shape[:2]
    return np.concatenate(
      [x[..., k * size : (k + 1) * size] @ q['w'][k] + q['b'][k] for k in range(heads)], axis=-1
    )

  r = sigmoid(block_diagonal(p['a_gate']))
  i = sigmoid(block_diagonal(p['input_gate']))
  a = sigmoid(-p['a_param']) ** (cell.c * r)
  h = a * h + np.sqrt(1 - a**2) * (i * x)
  return h, h


CELLS = {
  'mingru': lambda h: jaxrnn.MinGRUCell(h),
  'mingru_log': lambda h: jaxrnn.MinGRUCell(h, log_space=True),
  'minlstm': lambda h: jaxrnn.MinLSTMCell(h),
  'minlstm_log': lambda h: jaxrnn.MinLSTMCell(h, log_space=True, use_bias=False),
  'lru': lambda h: jaxrnn.LRUCell(h, state_size=h + 2),
  'rglru': lambda h: jaxrnn.RGLRUCell(h),
  'rglru_heads': lambda h: jaxrnn.RGLRUCell(h, num_heads=2, c=4.0),
  'lru_wide': lambda h: jaxrnn.LRUCell(h, state_size=5),
  'rglru_wide': lambda h: jaxrnn.RGLRUCell(h, num_heads=3),
}
# (in_features, features), F = H where not given. LRU and RG-LRU read x elementwise for F = H (the
# papers); for F != H LRU's skip D is a dense [F, H] and RG-LRU projects x first (x W_in, [F, H]).
WIDTH = {
  'mingru': (F, 5),
  'mingru_log': (F, 5),
  'minlstm': (F, 5),
  'minlstm_log': (F, 5),
  'lru_wide': (2 * F, 3),
  'rglru_wide': (F, 6),
}


def make_cell(name):
  in_features, features = WIDTH.get(name, (F, F))
  return CELLS[name](features), in_features


def random_params(cell, in_features, rng, scale=0.7):
  """Normal(0, scale) values shaped like ``cell.init``'s (without drawing them: each new shape of a
  random draw compiles on XLA:CPU), as float32 JAX arrays and float64 NumPy arrays."""
  shapes = jax.eval_shape(lambda key: cell.init(key, in_features), jax.random.key(0))
  values = jax.tree.map(lambda a: rng.normal(size=a.shape) * scale, shapes)
  return jax.tree.map(lambda v: jnp.asarray(v, jnp.float32), values), values


def random_state(cell, shape, rng):
  h = rng.normal(size=(*shape, cell.state_size))
  if isinstance(cell, jaxrnn.LRUCell):
    h = h + 1j * rng.normal(size=h.shape)
  return h


@pytest.mark.parametrize('name', list(CELLS))
def test_step_matches_the_papers_equations_in_numpy(name, rng):
  cell, in_features = make_cell(name)
  params, numpy_params = random_params(cell, in_features, rng)
  h = random_state(cell, (B,), rng)
  carry = jnp.asarray(h, cell.initial_carry((B,)).dtype)
  step = jax.jit(cell)
  for _ in range(4):
    x = rng.normal(size=(B, in_features)) * 2
    carry, y = step(params, carry, jnp.asarray(x, jnp.float32))
    h, want_y = numpy_step(cell, numpy_params, h, x)
    np.testing.assert_allclose(np.asarray(carry), h, atol=2e-5, rtol=2e-5)
    np.testing.assert_allclose(np.asarray(y), want_y, atol=2e-5, rtol=2e-5)
    assert y.shape == (B, cell.output_size)


@pytest.mark.parametrize('name', list(CELLS))
def test_linear_form_and_readout_are_the_step(name, rng):
  cell, in_features = make_cell(name)
  params, _ = random_params(cell, in_features, rng)
  carry = jnp.asarray(random_state(cell, (2, B), rng), cell.initial_carry((2, B)).dtype)
  x = jnp.asarray(rng.normal(size=(2, B, in_features)), jnp.float32)  # two batch axes
  a, b = cell.linear_form(params, x)
  assert a.shape == b.shape == carry.shape
  assert a.dtype == b.dtype == carry.dtype
  new_carry, y = cell(params, carry, x)
  np.testing.assert_allclose(a * carry + b, new_carry, atol=1e-6, rtol=1e-6)
  np.testing.assert_allclose(cell.readout(params, a * carry + b, x), y, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize('name', ['mingru_log', 'minlstm_log'])
def test_log_linear_form_is_the_log_of_the_linear_form(name, rng):
  cell, in_features = make_cell(name)
  params, _ = random_params(cell, in_features, rng, scale=1.0)
  x = jnp.asarray(rng.normal(size=(B, in_features)) * 3, jnp.float32)
  a, b = cell.linear_form(params, x)
  log_a, log_b = cell.log_linear_form(params, x)
  assert bool(jnp.all(b > 0)), 'log space: the candidate and so b are positive'
  np.testing.assert_allclose(log_a, jnp.log(a), atol=1e-5, rtol=1e-5)
  np.testing.assert_allclose(log_b, jnp.log(b), atol=1e-5, rtol=1e-5)
  # Saturated gates: the logs stay finite where a or b underflows in linear space.
  log_a, log_b = cell.log_linear_form(params, x * 1e4)
  assert bool(jnp.all(jnp.isfinite(log_a)) and jnp.all(jnp.isfinite(log_b)))
  # The recurrence in log space equals the step from a positive state.
  h = jnp.asarray(rng.uniform(0.1, 2.0, size=(B, cell.features)), jnp.float32)
  log_a, log_b = cell.log_linear_form(params, x)
  new_h, _ = cell(params, h, x)
  np.testing.assert_allclose(jnp.logaddexp(log_a + jnp.log(h), log_b), jnp.log(new_h), atol=1e-5)


@pytest.mark.parametrize('cell', [jaxrnn.MinGRUCell(3), jaxrnn.MinLSTMCell(3)])
def test_log_linear_form_needs_log_space(cell):
  params = cell.init(jax.random.key(0), 2)
  with pytest.raises(ValueError, match='log_space=True'):
    cell.log_linear_form(params, jnp.ones((2,)))


@pytest.mark.slow
def test_lru_ring_initialisation():
  r_min, r_max, max_phase = 0.4, 0.9, math.pi / 2
  cell = jaxrnn.LRUCell(8, state_size=2048, r_min=r_min, r_max=r_max, max_phase=max_phase)
  params = jax.jit(cell.init, static_argnums=1)(jax.random.key(0), 8)
  lam = np.asarray(cell.diagonal(params), np.complex128)
  modulus, phase = np.abs(lam), np.angle(lam)
  assert modulus.min() >= r_min - 1e-6 and modulus.max() <= r_max + 1e-6
  assert phase.min() >= 0 and phase.max() <= max_phase + 1e-6
  # Uniform in area on the ring: |lambda|^2 uniform on [r_min^2, r_max^2].
  np.testing.assert_allclose(np.mean(modulus**2), (r_min**2 + r_max**2) / 2, atol=0.02)
  np.testing.assert_allclose(np.mean(phase), max_phase / 2, atol=0.05)
  np.testing.assert_allclose(np.exp(params['gamma_log']), np.sqrt(1 - modulus**2), rtol=1e-5)
  np.testing.assert_allclose(np.std(params['B_re']), 1 / math.sqrt(2 * 8), rtol=0.05)
  np.testing.assert_allclose(np.std(params['C_im']), 1 / math.sqrt(2048), rtol=0.05)
  # The paper's defaults (r_min = 0, the full disc) stay finite.
  params = jax.jit(jaxrnn.LRUCell(8, state_size=2048).init, static_argnums=1)(jax.random.key(1), 8)
  assert all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax.tree.leaves(params))


def test_rglru_initialisation_of_the_decay():
  cell = jaxrnn.RGLRUCell(2048, num_heads=8)
  params = jax.jit(cell.init, static_argnums=1)(jax.random.key(0), 2048)
  base = np.exp(-softplus(np.asarray(params['a_param'], np.float64)))  # a_t = base^(c r_t)
  assert base.min() >= 0.9 - 1e-6 and base.max() <= 0.999 + 1e-6
  np.testing.assert_allclose(np.mean(base**2), (0.9**2 + 0.999**2) / 2, atol=0.005)
  np.testing.assert_allclose(np.std(params['a_gate']['w']), 1 / math.sqrt(2048 // 8), rtol=0.05)
  assert not np.any(params['input_gate']['b'])


def numpy_layer(cell, directions, x, lengths):
  """Returns ``(outputs, final_carry)`` of a one-layer bidirectional layer, one sequence at a time."""
  batch, steps = x.shape[:2]
  outputs = np.zeros((batch, steps, 2 * cell.output_size))
  final = np.zeros((2, batch, cell.state_size), np.complex128)
  for b in range(batch):
    for d, p in enumerate(directions):
      h = np.zeros(cell.state_size)
      order = range(lengths[b]) if d == 0 else reversed(range(lengths[b]))
      for t in order:
        h, y = numpy_step(cell, p, h, x[b, t])
        outputs[b, t, d * cell.output_size : (d + 1) * cell.output_size] = y
      final[d, b] = h
  return outputs, final


@pytest.mark.parametrize(
  'name',
  [
    'mingru_log',
    slow('minlstm'),
    slow('lru'),
    slow('rglru_heads'),
    slow('mingru'),
    slow('minlstm_log'),
    slow('rglru'),
    slow('lru_wide'),
    slow('rglru_wide'),
  ],
)
def test_bidirectional_layer_matches_a_per_sequence_loop(name, rng):
  cell, in_features = make_cell(name)
  layer = jaxrnn.Recurrent(cell, bidirectional=True)
  forward, forward_np = random_params(cell, in_features, rng, scale=0.5)
  backward, backward_np = random_params(cell, in_features, rng, scale=0.5)
  variables = {'params': {'l0': forward, 'l0_reverse': backward}}
  x = rng.normal(size=(B, T, in_features))
  lengths = np.array([T, 2, 0])
  apply = jax.jit(layer.apply)
  outputs, final = apply(variables, jnp.asarray(x, jnp.float32), jnp.asarray(lengths))
  want_outputs, want_final = numpy_layer(cell, (forward_np, backward_np), x, lengths)
  np.testing.assert_allclose(np.asarray(outputs), want_outputs, atol=2e-5, rtol=2e-5)
  np.testing.assert_allclose(np.asarray(final), want_final, atol=2e-5, rtol=2e-5)
  assert not np.any(np.asarray(outputs)[1, 2:]) and not np.any(np.asarray(outputs)[2])

  def loss(variables):
    outputs, final = layer.apply(variables, jnp.asarray(x, jnp.float32), jnp.asarray(lengths))
    return jnp.sum(outputs**2) + jnp.sum(jnp.abs(final) ** 2)

  grads = jax.jit(jax.grad(loss))(variables)
  assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))
  assert any(bool(jnp.any(g != 0)) for g in jax.tree.leaves(grads['params']['l0_reverse']))


@pytest.mark.parametrize(
  'name',
  [slow('rglru'), slow('mingru'), slow('mingru_log'), slow('minlstm'), slow('minlstm_log'), slow('lru')],
)
def test_long_sequences_stay_finite_forward_and_backward(name):
  """T = 65,536 under the parallel scan: outputs and gradients finite (one compile a cell, QUICK_COMPILE)."""
  cell, in_features = make_cell(name)
  layer = jaxrnn.Recurrent(cell, scan_mode='associative')
  x = jax.random.normal(jax.random.key(0), (1, 65_536, in_features)) * 3
  variables = layer.init(jax.random.key(1), x[:, :1])

  @functools.partial(jax.jit, compiler_options=QUICK_COMPILE)
  def run(variables, x):
    def loss(variables):
      outputs, final = layer.apply(variables, x)
      return jnp.mean(outputs**2) + jnp.mean(jnp.abs(final) ** 2), outputs

    return jax.grad(loss, has_aux=True)(variables)

  grads, outputs = run(variables, x)
  assert bool(jnp.all(jnp.isfinite(outputs)))
  assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))


@pytest.mark.parametrize('name', ['mingru', 'rglru', slow('lru')])
def test_bfloat16_compute_keeps_the_state_in_float32(name, rng):
  cell, in_features = make_cell(name)
  params, _ = random_params(cell, in_features, rng, scale=0.5)
  variables = {'params': {'l0': params}}
  x = jnp.asarray(rng.normal(size=(B, T, in_features)), jnp.float32)
  want, want_final = jaxrnn.Recurrent(cell).apply(variables, x)
  got, final = jaxrnn.Recurrent(cell, dtype=jnp.bfloat16).apply(variables, x)
  assert got.dtype == jnp.bfloat16
  assert final.dtype == (jnp.complex64 if name == 'lru' else jnp.bfloat16)
  np.testing.assert_allclose(np.asarray(got, np.float32), want, atol=0.05, rtol=0.05)
  if name != 'lru':  # LRU's carry is complex64 already
    assert cell.widen_carry(cell.initial_carry((2,), jnp.bfloat16)).dtype == jnp.float32


def test_carry_dtypes():
  lru = jaxrnn.LRUCell(3)
  assert lru.initial_carry((2,)).dtype == jnp.complex64
  assert lru.initial_carry((2,), jnp.bfloat16).dtype == jnp.complex64
  assert jaxrnn.MinGRUCell(3).initial_carry((2, 5)).shape == (2, 5, 3)


@pytest.mark.parametrize(
  'make, error, match',
  [
    (lambda: jaxrnn.MinGRUCell(0), ValueError, '`features`'),
    (lambda: jaxrnn.MinGRUCell(3, log_space='yes'), TypeError, '`log_space`'),
    (lambda: jaxrnn.MinLSTMCell(3, kernel_init=1.0), TypeError, '`kernel_init`'),
    (lambda: jaxrnn.LRUCell(3, r_min=0.9, r_max=0.5), ValueError, '`r_min` must be below `r_max`'),
    (lambda: jaxrnn.LRUCell(3, r_max=1.5), ValueError, '`r_max`'),
    (lambda: jaxrnn.LRUCell(3, max_phase=0.0), ValueError, '`max_phase`'),
    (lambda: jaxrnn.RGLRUCell(6, num_heads=4), ValueError, '`num_heads` must divide `features`'),
    (lambda: jaxrnn.RGLRUCell(6, c=-1.0), ValueError, '`c`'),
  ],
)
def test_bad_fields_are_named_errors(make, error, match):
  with pytest.raises(error, match=match):
    make()


def test_mismatched_step_arguments_are_named_errors():
  cell = jaxrnn.MinGRUCell(3)
  params = cell.init(jax.random.key(0), 2)
  with pytest.raises(ValueError, match='`x` of MinGRUCell'):
    cell(params, cell.initial_carry((4,)), jnp.ones((4, 5)))
  with pytest.raises(ValueError, match=r'`carry` \(h\) of MinGRUCell'):
    cell(params, cell.initial_carry((5,)), jnp.ones((4, 2)))
  lru = jaxrnn.LRUCell(3, state_size=4)
  with pytest.raises(ValueError, match=r'`carry` \(h\) of LRUCell must have shape \[4, 4\]'):
    lru(lru.init(jax.random.key(0), 3), jnp.zeros((4, 3), jnp.complex64), jnp.ones((4, 3)))


@pytest.mark.parametrize('cell', [jaxrnn.LRUCell(3, state_size=4), jaxrnn.RGLRUCell(3)])
@pytest.mark.parametrize('in_features', [3, 5])
def test_a_wrong_input_width_is_a_named_error(cell, in_features):
  """F = H or not, an x of another width than the parameters' F names both shapes."""
  params = jax.eval_shape(lambda key: cell.init(key, in_features), jax.random.key(0))
  params = jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), params)
  name = type(cell).__name__
  want = rf'`x` of {name} must have shape \[\*batch, F\] with F = {in_features} .*got \(2, 4\)'
  with pytest.raises(ValueError, match=want):
    cell(params, cell.initial_carry((2,)), jnp.ones((2, 4)))
  with pytest.raises(ValueError, match=want):
    cell.linear_form(params, jnp.ones((2, 4)))


def test_lru_skip_of_the_wrong_shape_is_a_named_error():
  cell = jaxrnn.LRUCell(3)
  shapes = jax.eval_shape(lambda key: cell.init(key, 5), jax.random.key(0))
  params = dict(jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), shapes), D=jnp.ones((3,)))  # [H], F = 5
  with pytest.raises(ValueError, match=r'`D` of LRUCell must have shape \[5, 3\].*got \[3\]'):
    cell.linear_form(params, jnp.ones((2, 5)))


def _shapes(cell, in_features):
  tree = jax.eval_shape(lambda key: cell.init(key, in_features), jax.random.key(0))
  return {jax.tree_util.keystr(path): leaf.shape for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def test_parameter_trees_for_equal_and_other_input_widths():
  """F = H keeps the papers' trees (RG-LRU: recurrentgemma's) exactly; F != H adds the least."""
  lru, rglru = jaxrnn.LRUCell(4, state_size=6), jaxrnn.RGLRUCell(4, num_heads=2)
  lru_tree = {
    "['B_im']": (4, 6),
    "['B_re']": (4, 6),
    "['C_im']": (6, 4),
    "['C_re']": (6, 4),
    "['D']": (4,),
    "['gamma_log']": (6,),
    "['nu_log']": (6,),
    "['theta_log']": (6,),
  }
  rglru_tree = {
    "['a_gate']['b']": (2, 2),
    "['a_gate']['w']": (2, 2, 2),
    "['a_param']": (4,),
    "['input_gate']['b']": (2, 2),
    "['input_gate']['w']": (2, 2, 2),
  }
  assert _shapes(lru, 4) == lru_tree
  assert _shapes(rglru, 4) == rglru_tree
  assert _shapes(lru, 8) == {**lru_tree, "['B_im']": (8, 6), "['B_re']": (8, 6), "['D']": (8, 4)}
  assert _shapes(rglru, 8) == {**rglru_tree, "['input_proj']['w']": (8, 4)}


@pytest.mark.slow
def test_initialisation_of_the_wide_input_parameters():
  """The dense skip D and W_in are N(0, 1/F); the rest of the tree is the F = H cell's draw."""
  key = jax.random.key(0)
  lru, rglru = jaxrnn.LRUCell(256), jaxrnn.RGLRUCell(256, num_heads=4)
  wide, square = lru.init(key, 512), lru.init(key, 256)
  np.testing.assert_allclose(np.std(wide['D']), 1 / math.sqrt(512), rtol=0.02)
  assert square['D'].shape == (256,)
  np.testing.assert_allclose(np.std(wide['B_re']), 1 / math.sqrt(2 * 512), rtol=0.02)
  wide, square = rglru.init(key, 512), rglru.init(key, 256)
  np.testing.assert_allclose(np.std(wide['input_proj']['w']), 1 / math.sqrt(512), rtol=0.02)
  assert_equal = np.testing.assert_array_equal
  jax.tree.map(assert_equal, {k: v for k, v in wide.items() if k != 'input_proj'}, square)


def test_rglru_sqrt_derivative_is_bounded_as_recurrentgemma():
  from jaxrnn._src.linear_cells import _sqrt_bounded_derivative

  v = jnp.array([0.0, 1e-9, 0.25, 1.0])
  sqrt = lambda v: _sqrt_bounded_derivative(v, 1000.0)  # noqa: E731
  np.testing.assert_allclose(sqrt(v), jnp.sqrt(v))
  # d sqrt(v) / dv = 1 / (2 sqrt(max(v, 1 / (4 * 1000^2)))): 1000 at and near 0, exact above.
  slope = jax.vmap(jax.grad(sqrt))(v)
  np.testing.assert_allclose(slope, [1000.0, 1000.0, 1.0, 0.5], rtol=1e-6)
  np.testing.assert_allclose(jax.jvp(sqrt, (v,), (jnp.ones_like(v),))[1], slope, rtol=1e-6)
