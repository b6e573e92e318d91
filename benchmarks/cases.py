"""The benchmark shapes and, for each framework, a builder of forward and forward+backward.

Shapes (L layers, D directions, B batch, T steps, F input, H hidden), from the performance issue:
S1 LSTM L=1 D=1 B=64 T=100 F=123 H=320; S2 L=2 D=1 B=64 T=20 F=H=512 for RNN-tanh, LSTM, GRU;
S3 LSTM L=2 D=2 B=32 T=200 F=123 H=320, ragged lengths uniform in [T/2, T];
S4 LSTM and GRU L=1 B=16 F=H=64 T=4096; S5 LSTM B=1 F=H=256 T=150.
"""

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Shape:
  name: str
  cell: str  # 'lstm', 'gru' or 'rnn_tanh'
  layers: int
  directions: int
  batch: int
  steps: int
  features: int
  hidden: int
  ragged: bool = False

  @property
  def gates(self):
    return {'lstm': 4, 'gru': 3, 'rnn_tanh': 1}[self.cell]

  def with_steps(self, steps):
    return dataclasses.replace(self, name=f'{self.name}@T={steps}', steps=steps)

  def data(self):
    """Returns ``(x [B, T, F] float32, lengths [B] int32 or None)``, fixed by the seed."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(self.batch, self.steps, self.features)).astype(np.float32)
    lengths = None
    if self.ragged:
      lengths = rng.integers(self.steps // 2, self.steps + 1, size=self.batch).astype(np.int32)
      lengths[0] = self.steps
    return x, lengths


SHAPES = {
  s.name: s
  for s in [
    Shape('S1', 'lstm', 1, 1, 64, 100, 123, 320),
    Shape('S2-rnn', 'rnn_tanh', 2, 1, 64, 20, 512, 512),
    Shape('S2-lstm', 'lstm', 2, 1, 64, 20, 512, 512),
    Shape('S2-gru', 'gru', 2, 1, 64, 20, 512, 512),
    Shape('S3', 'lstm', 2, 2, 32, 200, 123, 320, ragged=True),
    Shape('S4-lstm', 'lstm', 1, 1, 16, 4096, 64, 64),
    Shape('S4-gru', 'gru', 1, 1, 16, 4096, 64, 64),
    Shape('S5', 'lstm', 1, 1, 1, 150, 256, 256),
  ]
}


def jaxrnn_functions(shape, **options):
  """Returns ``(forward, forward_backward, args)`` for jaxrnn; ``options`` are layer fields."""
  import jaxrnn

  cls = {'lstm': jaxrnn.LSTM, 'gru': jaxrnn.GRU, 'rnn_tanh': jaxrnn.RNN}[shape.cell]
  layer = cls(shape.hidden, num_layers=shape.layers, bidirectional=shape.directions == 2, **options)
  return layer_functions(shape, layer)


def layer_functions(shape, layer):
  """Returns ``(forward, forward_backward, args)`` of a jaxrnn linen ``layer`` on ``shape``'s data."""
  import jax
  import jax.numpy as jnp

  x, lengths = shape.data()
  variables = layer.init(jax.random.key(0), x[:1, :2])

  def forward(variables, x, lengths):
    return layer.apply(variables, x, lengths)[0]

  def loss(variables, x, lengths):
    return jnp.sum(forward(variables, x, lengths))

  return forward, jax.grad(loss), (variables, x, lengths)


def flax_functions(shape, dtype=None):
  """``flax.linen.RNN`` with Flax's cells (``OptimizedLSTMCell``, ``GRUCell``, ``SimpleCell``).

  ``dtype``: the cells' compute dtype (e.g. ``'bfloat16'``); parameters stay float32.
  """
  import flax.linen as nn
  import jax
  import jax.numpy as jnp

  cell = {'lstm': nn.OptimizedLSTMCell, 'gru': nn.GRUCell, 'rnn_tanh': nn.SimpleCell}[shape.cell]

  class Stack(nn.Module):
    @nn.compact
    def __call__(self, x, lengths):
      for _ in range(shape.layers):
        if shape.directions == 2:
          x = nn.Bidirectional(
            nn.RNN(cell(shape.hidden, dtype=dtype)), nn.RNN(cell(shape.hidden, dtype=dtype))
          )(x, seq_lengths=lengths)
        else:
          x = nn.RNN(cell(shape.hidden, dtype=dtype))(x, seq_lengths=lengths)
      return x

  model = Stack()
  x, lengths = shape.data()
  variables = model.init(jax.random.key(0), x[:1, :2], None if lengths is None else lengths[:1])

  def forward(variables, x, lengths):
    return model.apply(variables, x, lengths)

  def loss(variables, x, lengths):
    return jnp.sum(forward(variables, x, lengths))

  return forward, jax.grad(loss), (variables, x, lengths)


def torch_functions(shape, dtype=None, device='cpu'):
  """PyTorch ``nn.LSTM/GRU/RNN`` (cuDNN on ``device='cuda'``); packed sequences for ragged batches.

  ``dtype``: e.g. ``'bfloat16'`` for the module and the inputs (PyTorch has no separate
  compute dtype for RNNs).
  """
  import torch
  from torch.nn.utils.rnn import pack_padded_sequence
  from torch.nn.utils.rnn import pad_packed_sequence

  cls = {'lstm': torch.nn.LSTM, 'gru': torch.nn.GRU, 'rnn_tanh': torch.nn.RNN}[shape.cell]
  module = cls(
    shape.features,
    shape.hidden,
    num_layers=shape.layers,
    bidirectional=shape.directions == 2,
    batch_first=True,
  )
  x, lengths = shape.data()
  module = module.to(device)
  x = torch.from_numpy(x).to(device)
  if dtype is not None:
    module = module.to(getattr(torch, dtype))
    x = x.to(getattr(torch, dtype))
  if device != 'cpu':
    module.flatten_parameters()  # one contiguous weight buffer, as cuDNN wants
  lengths = None if lengths is None else torch.from_numpy(lengths).long()

  def run():
    if lengths is None:
      return module(x)[0]
    packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    return pad_packed_sequence(module(packed)[0], batch_first=True, total_length=shape.steps)[0]

  def forward():
    with torch.no_grad():
      return run()

  def forward_backward():
    module.zero_grad(set_to_none=True)
    run().sum().backward()

  return forward, forward_backward
