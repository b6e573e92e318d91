"""Open cells: are the presets as fast as before, and what do a cell's optional hooks buy?

Two questions, each answered side by side in one run (interleaved rounds, one process per
measurement, medians over rounds of each process's median):

1. ``--before REV``: the presets (S1-S4 of ``benchmarks/cases.py``) on the code of git
   revision ``REV`` (exported to a temporary folder) against the working tree.
2. Hooks: an LSTM written as a user's cell with no hooks (the same math as
   ``jaxrnn.LSTMCell``, only ``init``/``initial_carry``/``__call__``) against
   ``LSTMCell`` with all its hooks, and with the fused backward turned off (hoisting hook only).

    python -m benchmarks.open_cells --before 37a3917 --rounds 2   # both, about 15 minutes on 2 cores
    python -m benchmarks.open_cells --shapes S1 --rounds 1 --skip-before
"""

import argparse
import dataclasses
import json
import pathlib
import statistics
import subprocess
import sys
import tarfile
import tempfile

HERE = pathlib.Path(__file__).parent
BEFORE_AFTER_SHAPES = ('S1', 'S2-lstm', 'S2-gru', 'S3', 'S4-lstm', 'S4-gru')
HOOK_SHAPES = ('S1', 'S3', 'S4-lstm')
HOOK_VARIANTS = ('LSTMCell (all hooks)', 'LSTMCell, fused_backward=False', 'user LSTM cell (no hooks)')


@dataclasses.dataclass(frozen=True)
class PlainLSTMCell:
  """PyTorch's LSTM step as a user would write it: the protocol only, no optional hooks."""

  hidden_size: int

  @property
  def output_size(self):
    return self.hidden_size

  def init(self, key, in_features, dtype=None):
    import jax
    import jax.numpy as jnp

    bound = self.hidden_size**-0.5
    keys = jax.random.split(key, 4)
    shapes = {
      'w_ih': (in_features, 4 * self.hidden_size),
      'w_hh': (self.hidden_size, 4 * self.hidden_size),
      'b_ih': (4 * self.hidden_size,),
      'b_hh': (4 * self.hidden_size,),
    }
    return {
      name: jax.random.uniform(k, shape, dtype or jnp.float32, -bound, bound)
      for k, (name, shape) in zip(keys, shapes.items(), strict=True)
    }

  def initial_carry(self, batch_shape, dtype=None):
    import jax.numpy as jnp

    zeros = jnp.zeros((*batch_shape, self.hidden_size), dtype or jnp.float32)
    return zeros, zeros

  def __call__(self, params, carry, x):
    import jax
    import jax.numpy as jnp

    h, c = carry
    z = x @ params['w_ih'] + params['b_ih'] + h @ params['w_hh'] + params['b_hh']
    i, f, g, o = jnp.split(z, 4, axis=-1)
    c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
    h = jax.nn.sigmoid(o) * jnp.tanh(c)
    return (h, c), h


def hook_functions(shape, variant):
  """Returns ``(forward, forward_backward, args)`` of ``jaxrnn.Recurrent`` over the variant's cell."""
  import jaxrnn
  from benchmarks import cases

  options = dict(num_layers=shape.layers, bidirectional=shape.directions == 2)
  if variant == 'user LSTM cell (no hooks)':
    layer = jaxrnn.Recurrent(PlainLSTMCell(shape.hidden), **options)
  else:
    fused = None if variant == 'LSTMCell (all hooks)' else False
    layer = jaxrnn.Recurrent(jaxrnn.LSTMCell(shape.hidden), fused_backward=fused, **options)
  return cases.layer_functions(shape, layer)


def child(shape_name, variant, runs):
  """Measures one hook variant in this process and prints one JSON line."""
  import jax

  from benchmarks import cases
  from benchmarks.measure import measure_jax

  result = {'shape': shape_name, 'variant': variant, 'version': f'jax {jax.__version__}'}
  result.update(measure_jax(*hook_functions(cases.SHAPES[shape_name], variant), 3, runs))
  print(json.dumps(result))


def run_json(command, cwd):
  out = subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=True).stdout
  return json.loads(out.strip().splitlines()[-1])


def export_revision(revision, folder):
  """Writes the files of git ``revision`` into ``folder`` (``git archive``)."""
  archive = pathlib.Path(folder) / 'tree.tar'
  with open(archive, 'wb') as f:
    subprocess.run(['git', 'archive', revision], cwd=HERE.parent, stdout=f, check=True)
  with tarfile.open(archive) as tar:
    tar.extractall(folder, filter='data')
  archive.unlink()


def median_of(results, key):
  return statistics.median(r[key] for r in results)


def before_after(revision, shapes, rounds, runs, before_tree=None):
  rows = []
  with tempfile.TemporaryDirectory() as folder:
    if before_tree is None:
      export_revision(revision, folder)
    trees = {f'before ({revision})': before_tree or folder, 'after (working tree)': str(HERE.parent)}
    for shape in shapes:
      per_tree = {name: [] for name in trees}
      for _ in range(rounds):
        for name, tree in trees.items():
          command = [sys.executable, '-m', 'benchmarks.measure', shape, 'jaxrnn', '--runs', str(runs)]
          result = run_json(command, tree)  # run from that tree: its jaxrnn and its benchmarks
          per_tree[name].append(result)
          print(
            f'  {shape:8s} {name:28s} fwd {result["fwd_ms"]:8.1f} ms  fwd+bwd {result["fwdbwd_ms"]:8.1f} ms'
          )
      for name, results in per_tree.items():
        rows.append((shape, name, median_of(results, 'fwd_ms'), median_of(results, 'fwdbwd_ms')))
  return rows


def hooks(shapes, rounds, runs):
  rows = []
  for shape in shapes:
    per_variant = {name: [] for name in HOOK_VARIANTS}
    for _ in range(rounds):
      for variant in HOOK_VARIANTS:
        command = [
          sys.executable,
          '-m',
          'benchmarks.open_cells',
          '--child',
          shape,
          variant,
          '--runs',
          str(runs),
        ]
        result = run_json(command, HERE.parent)
        per_variant[variant].append(result)
        print(
          f'  {shape:8s} {variant:32s} fwd {result["fwd_ms"]:8.1f} ms  fwd+bwd {result["fwdbwd_ms"]:8.1f} ms'
        )
    for name, results in per_variant.items():
      rows.append((shape, name, median_of(results, 'fwd_ms'), median_of(results, 'fwdbwd_ms')))
  return rows


def table(rows, what):
  lines = [f'| shape | {what} | fwd ms | fwd+bwd ms |', '|---|---|---:|---:|']
  lines += [f'| {shape} | {name} | {fwd:.1f} | {fwdbwd:.1f} |' for shape, name, fwd, fwdbwd in rows]
  return '\n'.join(lines)


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--before', default='37a3917', help='git revision of the "before" presets')
  parser.add_argument(
    '--before-tree', help='a folder holding the "before" files already (e.g. where git is absent)'
  )
  parser.add_argument('--skip-before', action='store_true')
  parser.add_argument('--skip-hooks', action='store_true')
  parser.add_argument('--shapes', nargs='*', help='limit both parts to these shapes')
  parser.add_argument('--rounds', type=int, default=2)
  parser.add_argument('--runs', type=int, default=10)
  parser.add_argument('--child', nargs=2, metavar=('SHAPE', 'VARIANT'), help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.child:
    return child(*args.child, args.runs)

  from benchmarks.common import environment

  print(environment())
  if not args.skip_before:
    shapes = [s for s in BEFORE_AFTER_SHAPES if not args.shapes or s in args.shapes]
    rows = before_after(args.before, shapes, args.rounds, args.runs, args.before_tree)
    print(table(rows, 'presets on'))
  if not args.skip_hooks:
    shapes = [s for s in HOOK_SHAPES if not args.shapes or s in args.shapes]
    print(table(hooks(shapes, args.rounds, args.runs), 'cell'))


if __name__ == '__main__':
  main()
