"""The speed suite: jaxrnn vs Flax (`nn.RNN` with Flax's cells) vs PyTorch (CPU), side by side.

Every (shape, framework) is measured in its own process; frameworks alternate within each
round (interleaved), and the reported figure is the median over rounds of each process's
median of `--runs` timed calls after 3 warm-ups. Compile time is reported apart. Results
go to `benchmarks/results/` (JSON) and, with `--write`, into `benchmarks/README.md` with a
plot of time vs T.

    python -m benchmarks.run --quick          # S1, S3, S5, one round, no variants: about 2 minutes
    python -m benchmarks.run --write          # every shape, two rounds, T sweep and plot
"""

import argparse
import datetime
import json
import pathlib
import statistics
import subprocess
import sys

from benchmarks.common import environment

HERE = pathlib.Path(__file__).parent
FRAMEWORKS = ('jaxrnn', 'flax', 'torch')
QUICK = ('S1', 'S3', 'S5')
FULL = ('S1', 'S2-rnn', 'S2-lstm', 'S2-gru', 'S3', 'S4-lstm', 'S4-gru', 'S5')
SWEEP = tuple(f'S1@T={t}' for t in (25, 50, 100, 200, 400))
# Non-default options, measured in the same interleaved rounds ("framework[option]").
_AUTODIFF_AND_BFLOAT16 = ('jaxrnn[fused_backward=False]',) + tuple(
  f'{framework}[dtype=bfloat16]' for framework in FRAMEWORKS
)
_AUTODIFF_AND_CHUNKS = ('jaxrnn[fused_backward=False]', 'jaxrnn[checkpoint_every=64]')
VARIANTS = {
  'S1': _AUTODIFF_AND_BFLOAT16,
  'S3': _AUTODIFF_AND_BFLOAT16,
  'S4-lstm': _AUTODIFF_AND_CHUNKS,
  'S4-gru': _AUTODIFF_AND_CHUNKS,
}


def measure(shape, framework, runs, roofline=False):
  framework, _, option = framework.partition('[')
  command = [sys.executable, '-m', 'benchmarks.measure', shape, framework, '--runs', str(runs)]
  if option:
    command += ['--option', option.rstrip(']')]
  if roofline:
    command.append('--roofline')
  out = subprocess.run(command, cwd=HERE.parent, capture_output=True, text=True, check=True).stdout
  return json.loads(out.strip().splitlines()[-1])


def suite(shapes, rounds, runs, variants=True):
  results = {}
  for shape in shapes:
    names = FRAMEWORKS + (VARIANTS.get(shape, ()) if variants else ())
    per_framework = {f: [] for f in names}
    for round_ in range(rounds):
      for framework in names:
        result = measure(shape, framework, runs, roofline=framework == 'jaxrnn' and round_ == 0)
        per_framework[framework].append(result)
        print(
          f'  {shape:10s} {framework:30s} fwd {result["fwd_ms"]:9.1f} ms  fwd+bwd {result["fwdbwd_ms"]:9.1f} ms',
          flush=True,
        )
    results[shape] = {f: merge(r) for f, r in per_framework.items()}
  return results


def merge(results):
  """Median of each numeric field over rounds."""
  merged = dict(results[0])
  for key, value in results[0].items():
    if isinstance(value, float):
      merged[key] = statistics.median(r[key] for r in results if key in r)
  return merged


def table(results):
  lines = [
    '| shape | framework | fwd ms | fwd+bwd ms | compile fwd / fwd+bwd s | peak fwd+bwd MB '
    '| fwd+bwd speed-up of jaxrnn (same dtype) | roofline fwd | roofline fwd+bwd |',
    '|---|---|---|---|---|---|---|---|---|',
  ]
  for shape, by_framework in results.items():
    ours = by_framework['jaxrnn']
    for framework, r in by_framework.items():
      compile_s = f'{r["fwd_compile_s"]:.2f} / {r["fwdbwd_compile_s"]:.2f}' if 'fwd_compile_s' in r else '-'
      peak = f'{r["fwdbwd_peak_mb"]:.0f}' if 'fwdbwd_peak_mb' in r else '-'
      option = framework.partition('[')[2].rstrip(']')
      reference = by_framework.get(f'jaxrnn[{option}]', ours) if option.startswith('dtype=') else ours
      speedup = '' if r is reference else f'{r["fwdbwd_ms"] / reference["fwdbwd_ms"]:.2f}x'
      roof = ' | '.join(
        f'{r[key] / r[mode]:.0%} ({r[key]:.0f} ms)' if key in r else ''
        for key, mode in (('roofline_ms', 'fwd_ms'), ('roofline_fwdbwd_ms', 'fwdbwd_ms'))
      )
      lines.append(
        f'| {shape} | {framework} | {r["fwd_ms"]:.1f} | {r["fwdbwd_ms"]:.1f} | {compile_s} | {peak} | {speedup} | {roof} |'
      )
  return '\n'.join(lines)


def plot(sweep, path):
  import matplotlib

  matplotlib.use('Agg')
  import matplotlib.pyplot as plt

  steps = [int(s.split('=')[1]) for s in sweep]
  fig, ax = plt.subplots(figsize=(6, 4))
  for framework in FRAMEWORKS:
    ax.plot(steps, [sweep[s][framework]['fwdbwd_ms'] for s in sweep], marker='o', label=framework)
  ax.set_xlabel('T (time steps)')
  ax.set_ylabel('forward+backward, ms (median)')
  ax.set_xscale('log')
  ax.set_yscale('log')
  ax.set_xticks(steps, [str(t) for t in steps])
  ax.minorticks_off()
  ax.set_title('S1 shape (LSTM B=64 F=123 H=320) vs sequence length')
  ax.legend()
  ax.grid(alpha=0.3)
  fig.savefig(path, dpi=100, bbox_inches='tight')


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--quick', action='store_true', help='S1, S3, S5, one round, default options only')
  parser.add_argument('--runs', type=int, default=10)
  parser.add_argument(
    '--write', action='store_true', help='write the table and plot into benchmarks/README.md'
  )
  parser.add_argument('--from-json', help='re-render a saved results file instead of measuring')
  args = parser.parse_args()
  if args.from_json:
    saved = json.loads(pathlib.Path(args.from_json).read_text())
    env, results, sweep = saved['environment'], saved['results'], saved['sweep']
  else:
    env = environment()
    print(env)
    shapes, rounds = (QUICK, 1) if args.quick else (FULL, 2)
    results = suite(shapes, rounds, args.runs, variants=not args.quick)
    sweep = {} if args.quick else suite(SWEEP, 1, args.runs, variants=False)
  versions = {f: next(iter(results.values()))[f]['version'] for f in FRAMEWORKS}
  text = f'{env} | {versions["torch"]}\n\n{table(results)}\n'
  print('\n' + text)
  if not args.from_json:
    out = HERE / 'results'
    out.mkdir(exist_ok=True)
    stamp = datetime.datetime.now().strftime('%Y-%m-%d-%H%M')
    (out / f'{stamp}{"-quick" if args.quick else ""}.json').write_text(
      json.dumps({'environment': env, 'results': results, 'sweep': sweep}, indent=1)
    )
  if args.write:
    if sweep:
      plot(sweep, HERE / 'time_vs_T.png')
    readme = HERE / 'README.md'
    body = readme.read_text()
    start, end = '<!-- suite:start -->', '<!-- suite:end -->'
    section = f'{start}\n{text}\n![time vs T](time_vs_T.png)\n{end}' if sweep else f'{start}\n{text}{end}'
    body = body[: body.index(start)] + section + body[body.index(end) + len(end) :]
    readme.write_text(body)


if __name__ == '__main__':
  main()
