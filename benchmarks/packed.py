"""Packed sequences: throughput of a 2-layer bidirectional LSTM, packed vs padded, and PyTorch.

Sequences per second (forward+backward, one epoch over the same ``N`` sequences) of
``jaxrnn.LSTM(H, num_layers=2, bidirectional=True)`` on

- padded batches: ``B = 64`` sequences a batch, each padded to ``T``, with ``seq_lengths``;
- packed batches: ``jaxrnn.pack_sequences`` over the whole set, rows of ``T`` steps, 64 rows a
  batch, ``max_segments = S`` fixed (every batch has the same shape: one compile; the last
  batch is filled with padding rows through ``num_rows``);
- PyTorch: ``nn.LSTM(num_layers=2, bidirectional=True, batch_first=True)`` with the same
  weights (``jaxrnn.interop.to_torch``) on the padded batches as ``pack_padded_sequence``
  (``enforce_sorted=False``), 64 sequences a batch, default threads.

Two length distributions: the surnames of ``examples/classify_names.py`` (its loader; characters
as fixed random embeddings of ``F = 32``, ``T`` = the longest name) and lengths uniform in
``[T/8, T]``. Loss: sum of the outputs plus sum of the final hidden states; gradients with
respect to the parameters. Batches are built before timing (padding, packing and
``pack_padded_sequence`` are data preparation for all three). One epoch of every variant runs
per round, variants interleaved; the figure is the median over rounds, after a first epoch that
compiles, warms up and checks that every variant gives the same per-sequence outputs and final
states and the same gradient sum as jaxrnn padded (the loss sums over sequences, so it is the
same loss in every scheme).

    python -m benchmarks.packed --rounds 3     # about 10 minutes on 2 cores
    python -m benchmarks.packed --quick        # tiny sizes, seconds (the smoke test)
"""

import argparse
import dataclasses
import pathlib
import subprocess
import sys
import tempfile

import numpy as np

from benchmarks.common import environment
from benchmarks.common import interleaved_seconds

ROOT = pathlib.Path(__file__).parent.parent
BATCH = 64


@dataclasses.dataclass(frozen=True)
class Setting:
  name: str
  num_sequences: int  # N; names: at most the loader's 4210
  steps: int  # T; names: 0, the longest name
  features: int
  hidden: int


SETTINGS = {
  'names': Setting('names', 4210, 0, 32, 128),
  'uniform': Setting('uniform', 1024, 128, 64, 128),
}
QUICK = {
  'names': Setting('names', 300, 0, 8, 16),
  'uniform': Setting('uniform', 150, 24, 8, 16),
}


def name_sequences(setting, rng):
  """The surnames of ``examples/classify_names.py`` (its loader), each ``[len, F]``, and ``T``."""
  sys.path.insert(0, str(ROOT / 'examples'))
  from classify_names import NamesData  # needs faker (the `examples` extra)

  data = NamesData()
  table = rng.normal(size=(data.vocab, setting.features)).astype(np.float32)
  chosen = rng.permutation(len(data.encoded))[: setting.num_sequences]
  sequences = [table[data.encoded[i]] for i in chosen]
  return sequences, max(len(s) for s in sequences)


def uniform_sequences(setting, rng):
  lengths = rng.integers(setting.steps // 8, setting.steps + 1, size=setting.num_sequences)
  sequences = [rng.normal(size=(n, setting.features)).astype(np.float32) for n in lengths]
  return sequences, setting.steps


def padded_batches(sequences, steps):
  """Batches of ``BATCH`` sequences ``(x [64, T, F], lengths [64])``; the last filled with length-0 rows."""
  import jaxrnn

  empty = np.zeros((0, *sequences[0].shape[1:]), np.float32)
  batches = []
  for start in range(0, len(sequences), BATCH):
    chunk = sequences[start : start + BATCH]
    batches.append(jaxrnn.pad_sequences(chunk + [empty] * (BATCH - len(chunk)), steps))
  return batches


def packed_batches(sequences, steps):
  """``(batches of (x [64, T, F], segment_ids [64, T]), positions [N, 2], S)``."""
  import jaxrnn

  _, ids = jaxrnn.pack_sequences([np.zeros(len(s)) for s in sequences], steps)
  num_segments = int(ids.max())  # the most sequences first-fit-decreasing puts in a row
  num_rows = -(-len(ids) // BATCH) * BATCH
  x, ids, positions = jaxrnn.pack_sequences(
    sequences, steps, num_rows=num_rows, max_segments=num_segments, return_positions=True
  )
  batches = [(x[r : r + BATCH], ids[r : r + BATCH]) for r in range(0, num_rows, BATCH)]
  return batches, positions, num_segments


def jax_variant(layer, variables, batches, packed_segments=None):
  """Returns ``(epoch, check)``: one epoch of jitted gradients, and an epoch that also returns each
  batch's ``(outputs, h, c)`` as NumPy arrays and the gradients summed over the batches."""
  import jax
  import jax.numpy as jnp

  def run(variables, x, aux):
    if packed_segments is None:
      return layer.apply(variables, x, aux)
    return layer.apply(variables, x, segment_ids=aux, num_segments=packed_segments)

  def loss(variables, x, aux):
    outputs, carry = run(variables, x, aux)
    return jnp.sum(outputs) + jnp.sum(carry[0]), (outputs, carry)

  grad = jax.jit(jax.grad(loss, has_aux=True))
  device_batches = [tuple(jnp.asarray(a) for a in batch) for batch in batches]

  def epoch():
    jax.block_until_ready([grad(variables, *batch)[0] for batch in device_batches])

  def check():
    total, results = None, []
    for batch in device_batches:
      grads, (outputs, carry) = grad(variables, *batch)
      total = grads if total is None else jax.tree.map(jnp.add, total, grads)
      results.append((np.asarray(outputs), np.asarray(carry[0]), np.asarray(carry[1])))
    return results, total

  return epoch, check


def per_sequence_padded(results, lengths):
  """``[outputs [sum of lengths, 2H], h [N, L*D, H], c [N, L*D, H]]`` in the sequences' order."""
  outputs = [results[i // BATCH][0][i % BATCH, :length] for i, length in enumerate(lengths)]
  h, c = (np.concatenate([r[k].swapaxes(0, 1) for r in results])[: len(lengths)] for k in (1, 2))
  return [np.concatenate(outputs), h, c]


def per_sequence_packed(results, batches, positions):
  """The same as ``per_sequence_padded`` from packed rows: sequence ``i`` at ``positions[i]``."""
  outputs, h, c = [], [], []
  for row, segment in positions:
    y, h_all, c_all = results[row // BATCH]
    ids = batches[row // BATCH][1][row % BATCH]
    outputs.append(y[row % BATCH][ids == segment])
    h.append(h_all[:, row % BATCH, segment - 1])
    c.append(c_all[:, row % BATCH, segment - 1])
  return [np.concatenate(outputs), np.stack(h), np.stack(c)]


def torch_child(folder):
  """PyTorch in its own process (no XLA threads beside its OpenMP ones): reads the sequences and
  weights from ``folder/data.npz``, writes its check to ``folder/torch.npz``, then runs one epoch
  per line ``epoch`` on stdin and answers ``done``."""
  import torch
  from torch.nn.utils.rnn import pack_padded_sequence
  from torch.nn.utils.rnn import pad_packed_sequence

  data = np.load(pathlib.Path(folder) / 'data.npz')
  lengths, steps = data['lengths'], int(data['steps'])
  sequences = np.split(data['flat'], np.cumsum(lengths)[:-1])
  weights = {k[2:]: torch.from_numpy(data[k]) for k in data.files if k.startswith('w:')}
  hidden = weights['weight_hh_l0'].shape[1]
  module = torch.nn.LSTM(sequences[0].shape[1], hidden, num_layers=2, bidirectional=True, batch_first=True)
  module.load_state_dict(weights)
  batches = []
  for start in range(0, len(sequences), BATCH):
    chunk = sequences[start : start + BATCH]
    x = np.zeros((len(chunk), steps, chunk[0].shape[1]), np.float32)
    for row, sequence in zip(x, chunk, strict=True):
      row[: len(sequence)] = sequence
    size = torch.from_numpy(lengths[start : start + BATCH]).long()
    batches.append(pack_padded_sequence(torch.from_numpy(x), size, batch_first=True, enforce_sorted=False))

  def step(packed):
    outputs, (h, c) = module(packed)
    (outputs.data.sum() + h.sum()).backward()
    return outputs, h, c

  module.zero_grad(set_to_none=True)
  outputs, h, c = [], [], []  # the first epoch: warm-up and check (gradients summed over batches)
  for packed in batches:
    y, h_n, c_n = step(packed)
    padded, sizes = pad_packed_sequence(y, batch_first=True)
    outputs += [padded[b, :n].detach().numpy() for b, n in enumerate(sizes.tolist())]
    h.append(h_n.detach().numpy().swapaxes(0, 1))
    c.append(c_n.detach().numpy().swapaxes(0, 1))
  grads = {f'g:{name}': p.grad.numpy() for name, p in module.named_parameters()}
  np.savez(
    pathlib.Path(folder) / 'torch.npz',
    outputs=np.concatenate(outputs),
    h=np.concatenate(h),
    c=np.concatenate(c),
    **grads,
  )
  print(f'ready torch {torch.__version__} ({torch.get_num_threads()} threads)', flush=True)
  for line in sys.stdin:
    if line.strip() == 'epoch':
      for packed in batches:
        module.zero_grad(set_to_none=True)
        step(packed)
      print('done', flush=True)


class TorchProcess:
  """The parent's end of ``torch_child``: ``check()`` and ``epoch()`` like the jaxrnn variants."""

  def __init__(self, folder, sequences, lengths, steps, state_dict):
    np.savez(
      pathlib.Path(folder) / 'data.npz',
      flat=np.concatenate(sequences),
      lengths=lengths,
      steps=steps,
      **{f'w:{k}': np.asarray(v) for k, v in state_dict.items()},
    )
    command = [sys.executable, '-m', 'benchmarks.packed', '--torch-child', str(folder)]
    self.folder = pathlib.Path(folder)
    self.process = subprocess.Popen(
      command, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )

  def _expect(self, word):
    line = self.process.stdout.readline()
    if not line.startswith(word):
      raise RuntimeError(f'PyTorch process answered {line!r} (exit code {self.process.poll()})')
    return line

  def check(self):
    self.version = self._expect('ready').split(' ', 1)[1].strip()
    data = np.load(self.folder / 'torch.npz')
    results = [data['outputs'], data['h'], data['c']]
    return results, {k[2:]: data[k] for k in data.files if k.startswith('g:')}

  def epoch(self):
    self.process.stdin.write('epoch\n')
    self.process.stdin.flush()
    self._expect('done')

  def close(self):
    self.process.stdin.close()
    self.process.wait(timeout=60)


def compare(name, reference, results, ref_grads, grads):
  outputs = float(np.max(np.abs(reference[0] - results[0])))
  states = max(float(np.max(np.abs(a - b))) for a, b in zip(reference[1:], results[1:], strict=True))
  scale = max(float(np.max(np.abs(g))) for g in ref_grads.values())
  grad = max(float(np.max(np.abs(ref_grads[k] - np.asarray(grads[k])))) for k in ref_grads)
  print(
    f'  check {name:34s} max |diff| outputs {outputs:.1e}, final (h, c) {states:.1e}, '
    f'gradient sum {grad:.1e} (largest gradient entry {scale:.1e}, relative {grad / scale:.1e})'
  )
  return outputs, states, grad / scale


def benchmark(setting, rounds, autodiff, tolerance):
  import jax

  import jaxrnn

  rng = np.random.default_rng(0)
  make = name_sequences if setting.name == 'names' else uniform_sequences
  sequences, steps = make(setting, rng)
  lengths = np.array([len(s) for s in sequences], np.int32)
  padded = padded_batches(sequences, steps)
  packed, positions, num_segments = packed_batches(sequences, steps)
  valid = int(lengths.sum())
  print(
    f'\n{setting.name}: N={len(sequences)} sequences, lengths {lengths.min()}..{lengths.max()} '
    f'(mean {lengths.mean():.1f}), T={steps}, F={setting.features}, H={setting.hidden}, '
    f'2 layers, bidirectional; padded {len(padded)} batches of {BATCH} sequences, '
    f'packed {len(packed)} batches of {BATCH} rows, S={num_segments} '
    f'(mean {len(sequences) / (len(packed) * BATCH):.2f} sequences a row)'
  )
  padding = {
    'padded': 1 - valid / (len(padded) * BATCH * steps),
    'packed': 1 - valid / (len(packed) * BATCH * steps),
  }
  print(f'  padding: padded {padding["padded"]:.1%} of the steps, packed {padding["packed"]:.1%}')

  layers = {'': jaxrnn.LSTM(setting.hidden, num_layers=2, bidirectional=True)}
  if autodiff:
    layers['[fused_backward=False]'] = jaxrnn.LSTM(
      setting.hidden, num_layers=2, bidirectional=True, fused_backward=False
    )
  variables = layers[''].init(jax.random.key(0), padded[0][0][:1, :2])
  variants = {}
  for suffix, layer in layers.items():
    variants[f'jaxrnn padded{suffix}'] = jax_variant(layer, variables, padded)
    variants[f'jaxrnn packed{suffix}'] = jax_variant(layer, variables, packed, num_segments)
  with tempfile.TemporaryDirectory() as folder:
    state_dict = jaxrnn.interop.to_state_dict(layers[''], variables)
    torch = TorchProcess(folder, sequences, lengths, steps, state_dict)
    variants['torch packed sequences'] = torch.epoch, torch.check
    try:
      # First epoch of each: compiles, warms up and checks equal results.
      reference, ref_grads, worst = None, None, 0.0
      for name, (_, check) in variants.items():
        results, grads = check()
        if name.startswith('jaxrnn'):
          grads = jaxrnn.interop.to_state_dict(layers[''], grads)
          if 'padded' in name:
            results = per_sequence_padded(results, lengths)
          else:
            results = per_sequence_packed(results, packed, positions)
        if reference is None:
          reference, ref_grads = results, grads
          continue
        worst = max(worst, *compare(name, reference, results, ref_grads, grads))
      if worst > tolerance:
        raise SystemExit(f'packed, padded and PyTorch results differ by {worst:.1e} > {tolerance:.0e}')
      seconds = interleaved_seconds({name: epoch for name, (epoch, _) in variants.items()}, rounds)
    finally:
      torch.close()

  row_steps = {'padded': len(padded) * steps, 'packed': len(packed) * steps}
  rows = []
  base = np.median(seconds['jaxrnn padded'])
  for name, times in seconds.items():
    median = float(np.median(times))
    scheme = 'packed' if 'jaxrnn packed' in name else 'padded' if 'jaxrnn padded' in name else None
    rows.append(
      {
        'distribution': setting.name,
        'variant': name,
        'batches': len(packed) if scheme == 'packed' else len(padded),
        'padding': f'{padding[scheme]:.0%}' if scheme else 'none computed',
        'epoch_s': median,
        'per_round': times,
        'sequences_per_s': len(sequences) / median,
        'speedup': base / median,
        'step_ms': median / row_steps[scheme] * 1000 if scheme else None,
      }
    )
  return rows, torch.version


def table(rows):
  lines = [
    '| distribution | variant | batches | padding steps | epoch s (rounds) | sequences/s | vs jaxrnn padded | ms per 64-row step |',
    '|---|---|---:|---:|---:|---:|---:|---:|',
  ]
  for r in rows:
    per_round = ', '.join(f'{t:.2f}' for t in r['per_round'])
    step = '' if r['step_ms'] is None else f'{r["step_ms"]:.2f}'
    lines.append(
      f'| {r["distribution"]} | {r["variant"]} | {r["batches"]} | {r["padding"]} | {r["epoch_s"]:.2f} ({per_round}) '
      f'| {r["sequences_per_s"]:,.0f} | {r["speedup"]:.2f}x | {step} |'
    )
  return '\n'.join(lines)


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--quick', action='store_true', help='tiny sizes, one round (smoke test)')
  parser.add_argument('--distributions', default='names,uniform')
  parser.add_argument(
    '--rounds', type=int, default=None, help='timed epochs of each variant (default 5, quick 1)'
  )
  parser.add_argument('--no-autodiff', action='store_true', help='skip the fused_backward=False rows')
  parser.add_argument(
    '--tolerance', type=float, default=1e-4, help='largest difference accepted by the check'
  )
  parser.add_argument('--torch-child', metavar='FOLDER', help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.torch_child:
    return torch_child(args.torch_child)

  settings = QUICK if args.quick else SETTINGS
  rounds = args.rounds or (1 if args.quick else 5)
  print(environment())
  rows = []
  for name in args.distributions.split(','):
    new_rows, torch_version = benchmark(settings[name], rounds, not args.no_autodiff, args.tolerance)
    print(table(new_rows), flush=True)
    rows += new_rows
  print(f'\n{environment()} | {torch_version}\n')
  print(table(rows))


if __name__ == '__main__':
  main()
