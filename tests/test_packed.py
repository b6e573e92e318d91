"""Packed sequences (SPEC §11): each sequence packed in a row equals running it alone, in both
directions, for every cell; PyTorch per sequence is the oracle for RNN/LSTM/GRU."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import KINDS
from conftest import assert_trees_close
from conftest import each_value
from conftest import slow
from hypothesis import given
from hypothesis import strategies as st
from test_open_cells import DecayCell

import jaxrnn
from jaxrnn import LSTMState

F, H = 4, 5
# Three rows of T=9 steps, S=4 slots: padding between and after sequences, a row that
# starts with padding, a length-1 sequence, ids that do not occur (row 1 uses only 1).
IDS = np.array(
  [
    [1, 1, 1, 2, 2, 0, 3, 3, 3],
    [0, 1, 1, 1, 1, 1, 1, 0, 0],
    [1, 2, 2, 3, 3, 3, 4, 0, 0],
  ],
  np.int32,
)
S = 4


def packed_inputs(rng, ids=IDS, features=(F,), padding=np.nan):
  """Returns ``(inputs [R, T, *features], sequences)``: NaN at padding, ``sequences[(row, id)]``."""
  x = rng.normal(size=(*ids.shape, *features)).astype(np.float32)
  x[ids == 0] = padding
  sequences = {(r, s): x[r][ids[r] == s] for r in range(ids.shape[0]) for s in np.unique(ids[r]) if s}
  return x, sequences


def to_layout(x, time_major):
  return np.swapaxes(x, 0, 1) if time_major else x


def leaves_at(tree, index):
  return jax.tree.map(lambda leaf: leaf[index], tree)


def absent_slots(ids, num_segments):
  return [(r, s) for r in range(ids.shape[0]) for s in range(1, num_segments + 1) if not (ids[r] == s).any()]


@pytest.mark.parametrize(
  'kind,num_layers,bidirectional,fused',
  each_value(list(KINDS), [1, 2], [True, False], [True, False]),
)
def test_packed_matches_torch_per_sequence(rng, kind, num_layers, bidirectional, fused):
  torch = pytest.importorskip('torch')
  from torch.nn.utils.rnn import pack_padded_sequence
  from torch.nn.utils.rnn import pad_packed_sequence

  torch.manual_seed(0)
  cls, extra = KINDS[kind]
  module = getattr(torch.nn, cls)(F, H, num_layers=num_layers, bidirectional=bidirectional, **extra)
  layer, variables = jaxrnn.interop.from_torch(module)
  # fused_backward None: fused where the cell allows; 2-layer stacks also run in checkpointed chunks.
  # and, to cover both layouts without doubling the grid, time-major inputs.
  time_major = num_layers == 2
  options = dict(fused_backward=None if fused else False, checkpoint_every=4 if num_layers == 2 else 0)
  layer = layer.clone(time_major=time_major, **options)
  x, sequences = packed_inputs(rng)
  keys = list(sequences)

  # PyTorch on every sequence alone (one packed batch of them), a loss on outputs and states.
  batch, lengths = jaxrnn.pad_sequences([sequences[k] for k in keys])
  packed = pack_padded_sequence(
    torch.from_numpy(np.swapaxes(batch, 0, 1)), torch.from_numpy(lengths), enforce_sorted=False
  )
  out, final = module(packed)
  final = final if isinstance(final, tuple) else (final,)
  (torch.sum(torch.tanh(out.data) ** 2) + sum(torch.sum(torch.sin(f)) for f in final)).backward()
  want_outputs = [
    o[:n].detach().numpy()
    for o, n in zip(np.swapaxes(pad_packed_sequence(out)[0], 0, 1), lengths, strict=True)
  ]
  want_final = [f.detach().numpy() for f in final]

  def loss(variables):
    outputs, final = layer.apply(
      variables, to_layout(x, time_major), segment_ids=to_layout(IDS, time_major), num_segments=S
    )
    states = (final.h, final.c) if isinstance(final, LSTMState) else (final,)
    present = jnp.asarray([[(r, s) in sequences for s in range(1, S + 1)] for r in range(len(IDS))])
    terms = sum(jnp.sum(jnp.where(present[..., None], jnp.sin(f), 0)) for f in states)
    return jnp.sum(jnp.tanh(outputs) ** 2) + terms, (outputs, states)

  (_, (outputs, states)), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(variables)
  outputs = to_layout(np.asarray(outputs), time_major)
  assert np.isfinite(outputs).all()
  np.testing.assert_array_equal(outputs[IDS == 0], 0)
  for i, (r, s) in enumerate(keys):
    np.testing.assert_allclose(outputs[r][IDS[r] == s], want_outputs[i], atol=1e-5)
    for got, want in zip(states, want_final, strict=True):
      np.testing.assert_allclose(got[:, r, s - 1], want[:, i], atol=1e-5)
  for r, s in absent_slots(IDS, S):  # the initial carry, zeros
    for got in states:
      np.testing.assert_array_equal(got[:, r, s - 1], 0)
  grads = jaxrnn.interop.to_torch(layer, grads)
  for name, param in module.named_parameters():
    np.testing.assert_allclose(
      getattr(grads, name).detach().numpy(), param.grad.numpy(), atol=1e-4, err_msg=name
    )


CELLS = {
  'decay': lambda: DecayCell(H),
  'mgu': lambda: jaxrnn.MGUCell(H),
  'layernorm_lstm': lambda: jaxrnn.LayerNormLSTMCell(H),
  'conv_lstm': lambda: jaxrnn.ConvLSTMCell(3, kernel_size=(3,), spatial_shape=(6,)),
}


@pytest.mark.parametrize(
  'cell,options',
  [
    ('decay', dict(bidirectional=True, checkpoint_every=4)),
    slow('mgu', dict(bidirectional=True, checkpoint_every=4)),
    slow('layernorm_lstm', dict(bidirectional=True, unroll=3)),
    slow('conv_lstm', dict(bidirectional=True)),
    slow('decay', dict(time_major=True, remat=True)),
  ],
)
def test_packed_any_cell_equals_alone(rng, cell, options):
  """Users' and Flax-style cells: each packed sequence equals the same layer on it alone (its own
  row of a padded batch, and one truly alone), outputs, final carry and gradients."""
  layer = jaxrnn.Recurrent(CELLS[cell](), **options)
  features = (6, 2) if cell == 'conv_lstm' else (F,)
  time_major = options.get('time_major', False)
  x, sequences = packed_inputs(rng, features=features)
  keys = list(sequences)
  rows, slots = np.array(keys).T
  variables = layer.init(jax.random.key(0), jnp.zeros((1, 2, *features)))
  initial = layer.apply(variables, (len(IDS), S), method='initial_carry')
  initial = jax.tree.map(lambda c: jnp.asarray(rng.normal(size=c.shape), c.dtype), initial)
  alone_initial = leaves_at(initial, (slice(None), rows, slots - 1))
  batch, lengths = jaxrnn.pad_sequences([sequences[k] for k in keys])

  @jax.jit
  def packed(variables):
    ys, final = layer.apply(
      variables,
      to_layout(x, time_major),
      None,
      initial,
      segment_ids=to_layout(IDS, time_major),
      num_segments=S,
    )
    return to_layout(ys, time_major), leaves_at(final, (slice(None), rows, slots - 1)), final

  @jax.jit
  def alone(variables):
    ys, final = layer.apply(variables, to_layout(batch, time_major), lengths, alone_initial)
    return to_layout(ys, time_major), final

  ys, final, all_slots = packed(variables)
  want_ys, want_final = alone(variables)
  np.testing.assert_array_equal(np.asarray(ys)[IDS == 0], 0)
  for i, (r, s) in enumerate(keys):
    np.testing.assert_allclose(ys[r][IDS[r] == s], want_ys[i, : lengths[i]], atol=1e-5)
  assert_trees_close(final, want_final, atol=1e-5)
  for r, s in absent_slots(IDS, S):
    assert_trees_close(
      leaves_at(all_slots, (slice(None), r, s - 1)), leaves_at(initial, (slice(None), r, s - 1)), atol=0
    )
  r, s = keys[0]  # and one sequence truly alone, without padding
  one_ys, one_final = layer.apply(
    variables,
    to_layout(sequences[r, s][None], time_major),
    None,
    leaves_at(alone_initial, (slice(None), slice(0, 1))),
  )
  np.testing.assert_allclose(ys[r][IDS[r] == s], to_layout(np.asarray(one_ys), time_major)[0], atol=1e-5)
  assert_trees_close(leaves_at(final, (slice(None), 0)), leaves_at(one_final, (slice(None), 0)), atol=1e-5)

  def score(ys, final):
    return jnp.sum(jnp.sin(ys)) + sum(jnp.sum(jnp.cos(f)) for f in jax.tree.leaves(final))

  got = jax.grad(lambda v: score(*packed(v)[:2]))(variables)
  assert_trees_close(got, jax.grad(lambda v: score(*alone(v)))(variables), atol=2e-5)


@given(
  lengths=st.lists(st.integers(0, 9), min_size=1, max_size=8),
  bidirectional=st.booleans(),
  row_length=st.sampled_from([9, 12]),
)
def test_any_packing_equals_padding(lengths, bidirectional, row_length):
  """Hypothesis over lengths and packings: packed equals the padded call (seq_lengths) per
  sequence, outputs and final states. Shapes stay fixed (8 sequences, 4 rows, 4 slots), so
  examples reuse one compilation."""
  lengths = (lengths + [0] * 8)[:8]
  rng = np.random.default_rng(sum(lengths))
  sequences = [rng.normal(size=(n, F)).astype(np.float32) for n in lengths]
  layer, variables = _gru(bidirectional)
  x, ids, positions = jaxrnn.pack_sequences(
    sequences, row_length, num_rows=8, max_segments=4, return_positions=True
  )
  ys, final = layer.apply(variables, x, segment_ids=ids, num_segments=4)
  batch, seq_lengths = jaxrnn.pad_sequences(sequences, 9)
  want_ys, want_final = layer.apply(variables, batch, seq_lengths)
  got = jaxrnn.unpack_sequences(ys, ids, positions)
  for i, n in enumerate(lengths):
    np.testing.assert_allclose(got[i], np.asarray(want_ys)[i, :n], atol=1e-6)
  np.testing.assert_allclose(
    np.asarray(final)[:, positions[:, 0], positions[:, 1] - 1], want_final, atol=1e-6
  )


@functools.cache
def _gru(bidirectional):
  layer = jaxrnn.GRU(H, bidirectional=bidirectional)
  return layer, layer.init(jax.random.key(1), jnp.zeros((1, 1, F)))


def test_padding_is_never_read(rng):
  """NaN or inf in padded inputs and in the initial carries of ids that do not occur: finite
  outputs and gradients, and those slots' final carry is their initial carry, untouched."""
  layer = jaxrnn.LSTM(H, bidirectional=True)
  x, _ = packed_inputs(rng, padding=np.inf)
  x[IDS == 0, 0] = np.nan
  variables = layer.init(jax.random.key(0), x[:1, :1])
  initial = layer.apply(variables, (len(IDS), S), method='initial_carry')
  absent = tuple(np.array(absent_slots(IDS, S)).T)
  poison = lambda c: c.at[:, absent[0], absent[1] - 1].set(jnp.nan)  # noqa: E731
  initial = jax.tree.map(poison, initial)

  def loss(variables, initial):
    ys, final = layer.apply(variables, x, None, initial, segment_ids=IDS, num_segments=S)
    present = jnp.asarray(IDS.max(1)[:, None] >= np.arange(1, S + 1))  # slots that occur
    return jnp.sum(ys**2) + jnp.sum(jnp.where(present[..., None], final.h, 0)), (ys, final)

  grad = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))
  (value, (ys, final)), grads = grad(variables, initial)
  assert np.isfinite(value) and np.isfinite(ys).all()
  assert all(np.isfinite(g).all() for g in jax.tree.leaves(grads[0]))
  assert np.isnan(np.asarray(final.h)[:, absent[0], absent[1] - 1]).all()  # handed back as given


def test_shared_initial_carry_equals_broadcast(rng):
  layer = jaxrnn.GRU(H, bidirectional=True)
  x, _ = packed_inputs(rng)
  variables = layer.init(jax.random.key(0), x[:1, :1])
  shared = jnp.asarray(rng.normal(size=(2, len(IDS), H)), jnp.float32)
  per_sequence = jnp.broadcast_to(shared[:, :, None], (2, len(IDS), S, H))
  got = layer.apply(variables, x, None, shared, segment_ids=IDS, num_segments=S)
  want = layer.apply(variables, x, None, per_sequence, segment_ids=IDS, num_segments=S)
  assert_trees_close(got, want, atol=0)


def test_several_batch_axes_and_nnx(rng):
  """``segment_ids [*batch, T]`` with two batch axes equals the flattened batch; NNX equals linen."""
  ids = np.stack([IDS, IDS[::-1]])  # [2, 3, T]
  x, _ = packed_inputs(rng, ids)
  layer = jaxrnn.LSTM(H, bidirectional=True)
  variables = layer.init(jax.random.key(0), x[0, :1])
  ys, final = layer.apply(variables, x, segment_ids=ids, num_segments=S)
  flat_ys, flat_final = layer.apply(
    variables, x.reshape(6, -1, F), segment_ids=ids.reshape(6, -1), num_segments=S
  )
  assert ys.shape == (2, 3, IDS.shape[1], 2 * H) and final.h.shape == (2, 2, 3, S, H)
  assert_trees_close(ys.reshape(flat_ys.shape), flat_ys, atol=0)
  assert_trees_close(jax.tree.map(lambda a: a.reshape(2, 6, S, H), final), flat_final, atol=0)
  module = jaxrnn.interop.linen_to_nnx(layer, variables)
  assert_trees_close(module(x, segment_ids=ids, num_segments=S), (ys, final), atol=0)


def test_new_ids_do_not_recompile(rng):
  layer = jaxrnn.GRU(H, bidirectional=True)
  x, _ = packed_inputs(rng, padding=0.0)
  variables = layer.init(jax.random.key(0), x[:1, :1])
  traces = []

  @jax.jit
  def run(variables, x, ids):
    traces.append(1)
    return layer.apply(variables, x, segment_ids=ids, num_segments=S)

  first = run(variables, x, IDS)
  other = np.array([[1, 2, 3, 4, 4, 4, 4, 0, 0], [1] * 9, [0] * 9], np.int32)
  second = run(variables, x, other)
  assert len(traces) == 1
  assert_trees_close(first, layer.apply(variables, x, segment_ids=IDS, num_segments=S), atol=1e-6)
  assert_trees_close(second, layer.apply(variables, x, segment_ids=other, num_segments=S), atol=1e-6)
  # Traced ids outside [0, S] cannot be checked: they are read as padding.
  ys, _ = run(variables, x, np.where(IDS == 3, 7, IDS).astype(np.int32))
  np.testing.assert_array_equal(np.asarray(ys)[IDS == 3], 0)


def test_scan_layer_packed(rng):
  """The functional driver: ``segment_ids [T, *batch]``, carry leaves ``[*batch, S, ...]``."""
  params = jaxrnn.CellParams(w_ih=jnp.ones((1, 1)), w_hh=jnp.ones((1, 1)))
  ids = jnp.array([[1, 1, 2, 2, 2, 0]]).T  # T=6, B=1: sequences of 2 and 3 steps
  counts, ys = jaxrnn.scan_layer(
    jaxrnn.rnn_relu_cell,
    params,
    jnp.zeros((1, 2, 1)),
    jnp.ones((6, 1, 1)),
    segment_ids=ids,
    input_projection=None,
  )
  np.testing.assert_array_equal(ys[:, 0, 0], [1, 2, 1, 2, 3, 0])
  np.testing.assert_array_equal(counts[0, :, 0], [2, 3])
  back, ys = jaxrnn.scan_layer(
    jaxrnn.rnn_relu_cell,
    params,
    jnp.zeros((1, 2, 1)),
    jnp.ones((6, 1, 1)),
    segment_ids=ids,
    reverse=True,
    input_projection=None,
  )
  np.testing.assert_array_equal(ys[:, 0, 0], [2, 1, 3, 2, 1, 0])
  np.testing.assert_array_equal(back[0, :, 0], [2, 3])
  # num_segments: one initial carry shared by the row's sequences, here 10 (a running count from 10)
  counts, ys = jaxrnn.scan_layer(
    jaxrnn.rnn_relu_cell,
    params,
    jnp.full((1, 1), 10.0),
    jnp.ones((6, 1, 1)),
    segment_ids=ids,
    num_segments=3,
    input_projection=None,
  )
  np.testing.assert_array_equal(ys[:, 0, 0], [11, 12, 11, 12, 13, 0])
  np.testing.assert_array_equal(counts[0, :, 0], [12, 13, 10])  # id 3 does not occur


def test_recurrent_dropout_runs_packed(rng):
  layer = jaxrnn.LSTM(H, bidirectional=True, recurrent_dropout=0.5)
  x, _ = packed_inputs(rng)
  variables = layer.init(jax.random.key(0), x[:1, :1])
  ys, final = layer.apply(
    variables, x, segment_ids=IDS, num_segments=S, deterministic=False, rngs={'dropout': jax.random.key(1)}
  )
  assert np.isfinite(ys).all() and final.h.shape == (2, len(IDS), S, H)
  np.testing.assert_array_equal(np.asarray(ys)[IDS == 0], 0)


@pytest.mark.parametrize(
  'change,error,match',
  [
    (
      dict(segment_ids=np.array([[1, 1, 0, 1, 2, 2, 0, 0, 0]] * 3)),
      ValueError,
      r'id 1 in row \(0,\) has runs starting at steps \[0, 3\]',
    ),
    (
      dict(segment_ids=np.where(IDS == 4, 5, IDS)),
      ValueError,
      r'\[0, num_segments\] = \[0, 4\] \(0 for padding\), got 5 in row \(2,\) at step 6',
    ),
    (
      dict(segment_ids=IDS.T),
      ValueError,
      r'must have shape \(3, 9\).*got shape \(9, 3\)\. It is the transpose',
    ),
    (dict(segment_ids=IDS.astype(np.float32)), TypeError, 'must be integers'),
    (dict(seq_lengths=np.array([9, 9, 9])), ValueError, 'exclusive'),
    (dict(segment_ids=None), ValueError, '`num_segments` was given without `segment_ids`'),
    (dict(num_segments=0), TypeError, 'positive Python int'),
    (dict(initial_carry=jnp.zeros((1, 3, 3, H))), ValueError, r'initial_carry.*\(1, 3, 4, 5\)'),
  ],
)
def test_misuse_is_a_named_error(rng, change, error, match):
  layer = jaxrnn.GRU(H)
  x, _ = packed_inputs(rng)
  variables = layer.init(jax.random.key(0), x[:1, :1])
  kwargs = dict(segment_ids=IDS, num_segments=S, seq_lengths=None, initial_carry=None) | change
  with pytest.raises(error, match=match):
    layer.apply(variables, x, **kwargs)


def test_traced_ids_need_num_segments(rng):
  layer = jaxrnn.GRU(H)
  x, _ = packed_inputs(rng)
  variables = layer.init(jax.random.key(0), x[:1, :1])
  with pytest.raises(ValueError, match='`num_segments` must be given'):
    jax.jit(lambda ids: layer.apply(variables, x, segment_ids=ids))(IDS)
  # Concrete ids: S defaults to the largest id.
  assert layer.apply(variables, x, segment_ids=IDS)[1].shape == (1, 3, 4, H)


@pytest.mark.parametrize(
  'fused,shared', [(True, False), slow(True, True), slow(False, True), slow(False, False)]
)
def test_initial_carry_gradients(rng, fused, shared):
  """The gradient reaching the initial carries (fused: handed over at each sequence's first step
  in the loop's order) equals that of running every sequence alone from its initial carry."""
  layer = jaxrnn.LSTM(H, bidirectional=True, fused_backward=None if fused else False)
  x, sequences = packed_inputs(rng)
  keys = list(sequences)
  rows, slots = np.array(keys).T
  variables = layer.init(jax.random.key(0), x[:1, :1])
  shape = (2, len(IDS), H) if shared else (2, len(IDS), S, H)
  initial = LSTMState(*(jnp.asarray(rng.normal(size=shape), jnp.float32) for _ in range(2)))
  batch, lengths = jaxrnn.pad_sequences([sequences[k] for k in keys])

  def per_sequence(initial):  # [2, N, H]: each sequence's own initial carry
    return leaves_at(initial, (slice(None), rows) if shared else (slice(None), rows, slots - 1))

  def score(ys, final):
    return jnp.sum(jnp.sin(ys)) + jnp.sum(jnp.cos(final.h) * final.c)

  def packed(initial):
    ys, final = layer.apply(variables, x, None, initial, segment_ids=IDS, num_segments=S)
    return score(ys, leaves_at(final, (slice(None), rows, slots - 1)))

  def alone(initial):
    return score(*layer.apply(variables, batch, lengths, per_sequence(initial)))

  assert_trees_close(jax.jit(jax.grad(packed))(initial), jax.jit(jax.grad(alone))(initial), atol=1e-5)
