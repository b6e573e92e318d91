"""Train a PyTorch LSTM for a few steps, convert it to jaxrnn, and compare.

The model is a 2-layer bidirectional LSTM with projection, batch_first, read
with packed (ragged) sequences: every feature people get wrong when porting.
Needs the torch extra: python -m pip install -e '.[torch]' (from the repository's root).

    python examples/from_pytorch.py            # 200 training steps
    python examples/from_pytorch.py --steps 5  # smoke run
"""

import argparse

import install_hint

try:  # the `torch` extra's packages; if one is missing, say how to install it
  import jax
  import numpy as np
  import torch
  from torch.nn.utils.rnn import pack_padded_sequence
  from torch.nn.utils.rnn import pad_packed_sequence

  import jaxrnn
except ModuleNotFoundError as error:
  install_hint.exit_if_optional(error, extra='torch')

B, T, F = 16, 30, 4


def noisy_sines(rng):
  """Ragged batch of noisy sine waves; the target is the next value of the first feature."""
  lengths = rng.integers(T // 3, T + 1, size=B)
  t = np.arange(T + 1)[None, :, None] * rng.uniform(0.1, 0.5, size=(B, 1, F))
  x = np.sin(t + rng.uniform(0, 6, size=(B, 1, F))) + 0.05 * rng.normal(size=(B, T + 1, F))
  x[np.arange(T + 1)[None, :] >= lengths[:, None] + 1] = 0.0
  return x[:, :-1].astype(np.float32), x[:, 1:, 0].astype(np.float32), lengths


def torch_forward(lstm, head, x, lengths):
  packed = pack_padded_sequence(
    torch.from_numpy(x), torch.from_numpy(lengths), batch_first=True, enforce_sorted=False
  )
  out, (h_n, c_n) = lstm(packed)
  out, _ = pad_packed_sequence(out, batch_first=True, total_length=T)
  return out, h_n, c_n, head(out)[..., 0]


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--steps', type=int, default=200)
  args = parser.parse_args()

  torch.manual_seed(0)
  rng = np.random.default_rng(0)
  lstm = torch.nn.LSTM(F, 32, num_layers=2, bidirectional=True, batch_first=True, proj_size=16, dropout=0.1)
  head = torch.nn.Linear(32, 1)
  optimizer = torch.optim.Adam([*lstm.parameters(), *head.parameters()], lr=1e-2)
  for step in range(1, args.steps + 1):
    x, y, lengths = noisy_sines(rng)
    mask = torch.from_numpy(np.arange(T)[None, :] < lengths[:, None])
    pred = torch_forward(lstm, head, x, lengths)[-1]
    loss = ((pred - torch.from_numpy(y)) ** 2)[mask].mean()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    if step % max(1, args.steps // 5) == 0:
      print(f'torch step {step:4d}  loss {loss.item():.4f}')

  lstm.eval()  # dropout off, as deterministic=True in jaxrnn
  layer, variables = jaxrnn.interop.from_torch(lstm)
  print(f'\nconverted: {layer}')
  x, _, lengths = noisy_sines(np.random.default_rng(1))
  with torch.no_grad():
    out, h_n, c_n, _ = torch_forward(lstm, head, x, lengths)
  outputs, (h, c) = jax.jit(layer.apply)(variables, x, lengths)
  for name, ours, theirs in (('output', outputs, out), ('h_n', h, h_n), ('c_n', c, c_n)):
    diff = np.abs(np.asarray(ours) - theirs.numpy()).max()
    print(f'max |jaxrnn - torch| {name:6s} {tuple(ours.shape)}: {diff:.2e}')
    assert diff < 1e-5, name


if __name__ == '__main__':
  main()
