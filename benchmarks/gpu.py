"""The GPU suite: a correctness smoke test, then S1-S5 against Flax, cuDNN and PyTorch, in one process.

    pip install --no-deps -e .   # optional: the suite also runs from the repository root as is
    python -m benchmarks.gpu [--out DIR] [--quick] [--budget-s 420]

Needs an NVIDIA GPU with JAX and PyTorch built for CUDA already installed; no network.
(a) Smoke test on the GPU: padding semantics against the same layers on the CPU backend,
PyTorch parity against torch on CUDA (packed sequences), fused vs autodiff vs cuDNN
gradients, bfloat16 against float32. (b) Timings of S1-S5 (benchmarks/cases.py),
forward and forward+backward: jaxrnn (float32 with JAX's default TF32 matmuls, bfloat16, and
its paths: cuDNN, scan, scan without hoisting, autodiff), Flax `nn.RNN`,
`jax.experimental.rnn` (cuDNN LSTM) called directly, PyTorch cuDNN (float32 with its
default TF32, bfloat16; packed sequences for ragged S3). Candidates alternate within each
round; a figure is the median over rounds of the median of `--runs` timed calls after 3
warm-ups, device-synchronised. Writes `gpu-<stamp>.json` and `.md` (device, versions, date)
and a plot of time vs T to `--out`. Every line of the smoke test and of the timings is also
printed as it is measured, so a run cut short still shows what it got.

`--allow-cpu` runs the same code on the CPU backend with small shapes (the test suite does,
so this script cannot rot without a GPU); its numbers mean nothing.
"""

from __future__ import annotations

import os

# PyTorch shares the GPU with JAX in this process: JAX must not take 75% of it up front.
os.environ.setdefault('XLA_PYTHON_CLIENT_MEM_FRACTION', '0.45')

import argparse  # noqa: E402
import copy  # noqa: E402
import dataclasses  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import pathlib  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks import cases  # noqa: E402

HERE = pathlib.Path(__file__).parent
# Most informative first: a run that meets its time budget drops the last ones.
FULL = ('S1', 'S3', 'S2-lstm', 'S4-lstm', 'S5', 'S2-gru', 'S2-rnn', 'S4-gru')
QUICK = ('S1', 'S3', 'S5')
SWEEP_STEPS = (25, 100, 400, 1600)
SWEEP = ('jaxrnn', 'flax', 'torch', 'jax.experimental.rnn')


def candidates(shape) -> tuple[str, ...]:
  """The rows measured for ``shape``: defaults, bfloat16 peers, and jaxrnn's other paths."""
  names = ['jaxrnn', 'flax', 'torch', 'jaxrnn[dtype=bfloat16]', 'torch[dtype=bfloat16]']
  if shape.cell == 'lstm':
    names.append('jax.experimental.rnn')
  names += [
    'jaxrnn[hoist_input_projection=False]',
    'jaxrnn[fused_backward=False]',
    'jaxrnn[unroll=4]',
    'jaxrnn[unroll=8]',
    'jaxrnn[hoist_input_projection=False,unroll=8]',
    'jaxrnn[dtype=bfloat16,unroll=8]',
    'jaxrnn[loop=pallas]',  # the Pallas loop (jaxrnn/_src/pallas_loop.py), unmeasured before
  ]
  if shape.name in ('S1', 'S4-lstm'):
    names.append('jaxrnn[dtype=bfloat16,loop=pallas]')
  if shape.name in ('S1', 'S3'):
    names.append('flax[dtype=bfloat16]')
  return tuple(names)


def parse(name):
  """``'jaxrnn[fused_backward=False,unroll=2]'`` -> ``('jaxrnn', {'fused_backward': False, 'unroll': 2})``."""
  framework, _, rest = name.partition('[')
  options = {}
  for item in filter(None, rest.rstrip(']').split(',')):
    key, value = item.split('=')
    value = {'True': True, 'False': False, 'None': None}.get(value, value)
    options[key] = int(value) if isinstance(value, str) and value.isdigit() else value
  return framework, options


# ---------------------------------------------------------------------------------------------
# Builders: each returns (forward, forward_backward, args) with args on the default device.


def cudnn_direct_functions(shape):
  """``jax.experimental.rnn.lstm`` called directly on its own flat weights (float32 only)."""
  from jax.experimental import rnn

  x, lengths = shape.data()
  batch, steps, features = x.shape
  rows = shape.layers * shape.directions
  weights = rnn.init_lstm_weight(
    jax.random.key(0), features, shape.hidden, shape.layers, shape.directions == 2
  )
  lengths = np.full((batch,), steps, np.int32) if lengths is None else lengths

  def forward(weights, x, lengths):
    h0 = jnp.zeros((rows, batch, shape.hidden), x.dtype)
    return rnn.lstm(
      x,
      h0,
      h0,
      weights,
      lengths,
      input_size=features,
      hidden_size=shape.hidden,
      num_layers=shape.layers,
      dropout=0.0,
      bidirectional=shape.directions == 2,
    )[0]

  def loss(weights, x, lengths):
    return jnp.sum(forward(weights, x, lengths))

  return forward, jax.grad(loss), (weights, x, lengths)


def jax_candidate(shape, name):
  framework, options = parse(name)
  if framework == 'jaxrnn':
    forward, forward_backward, args = cases.jaxrnn_functions(shape, **options)
  elif framework == 'flax':
    forward, forward_backward, args = cases.flax_functions(shape, **options)
  else:
    forward, forward_backward, args = cudnn_direct_functions(shape)
  return forward, forward_backward, jax.device_put(args)


# ---------------------------------------------------------------------------------------------
# Timing


def _timed_ms(call, sync, warmup, runs):
  for _ in range(warmup):
    sync(call())
  times = []
  for _ in range(runs):
    start = time.perf_counter()
    sync(call())
    times.append(time.perf_counter() - start)
  return statistics.median(times) * 1000


def _peak_mb(compiled):
  memory = compiled.memory_analysis()
  if memory is None:
    return None
  total = memory.temp_size_in_bytes + memory.argument_size_in_bytes + memory.output_size_in_bytes
  return total / 2**20


class Prepared:
  """One candidate compiled (JAX) or built (PyTorch), ready to be timed in any round."""

  def __init__(self, shape, name, torch_device):
    self.name = name
    self.info = {}
    framework, options = parse(name)
    if framework == 'torch':
      import torch

      forward, forward_backward = cases.torch_functions(shape, device=torch_device, **options)
      sync = torch.cuda.synchronize if torch_device == 'cuda' else (lambda: None)
      self.calls = {'fwd': forward, 'fwdbwd': forward_backward}
      self.sync = lambda _: sync()
      return
    forward, forward_backward, args = jax_candidate(shape, name)
    self.calls = {}
    for mode, fn in (('fwd', forward), ('fwdbwd', forward_backward)):
      start = time.perf_counter()
      compiled = jax.jit(fn).lower(*args).compile()
      self.info[f'{mode}_compile_s'] = time.perf_counter() - start
      peak = _peak_mb(compiled)
      if peak is not None:
        self.info[f'{mode}_peak_mb'] = peak
      self.calls[mode] = lambda compiled=compiled: compiled(*args)
    self.sync = jax.block_until_ready
    if framework == 'jaxrnn':
      self.info['path'] = jaxrnn_path(shape, options)

  def time(self, warmup, runs):
    return {f'{mode}_ms': _timed_ms(call, self.sync, warmup, runs) for mode, call in self.calls.items()}


def jaxrnn_path(shape, options) -> str:
  """Which of jaxrnn's paths a layer with ``options`` takes for ``shape`` on this backend."""
  from jaxrnn._src.scan import default_hoist_input_projection

  cls = {'lstm': 'LSTM', 'gru': 'GRU', 'rnn_tanh': 'RNN'}[shape.cell]
  import jaxrnn

  layer = getattr(jaxrnn, cls)(
    shape.hidden, num_layers=shape.layers, bidirectional=shape.directions == 2, **options
  )
  config = layer.config
  hoist = config.hoist_input_projection
  hoist = default_hoist_input_projection() if hoist is None else hoist
  if config.use_pallas:
    return 'Pallas loop (hoisted projection, fused backward as a Pallas loop)'
  backward = 'fused' if config.use_fused_backward else 'autodiff'
  return f'{"hoisted" if hoist else "in-step"} projection, {backward} backward, unroll {config.unroll}'


def suite(shapes, names_of, rounds, runs, torch_device, deadline, log):
  results = {}
  for shape in shapes:
    if time.perf_counter() > deadline:
      log(f'  {shape.name}: skipped (time budget)')
      results[shape.name] = {'skipped': 'time budget'}
      continue
    prepared = []
    for name in names_of(shape):
      try:
        prepared.append(Prepared(shape, name, torch_device))
      except Exception as error:  # a peer that cannot run here is recorded, not fatal
        log(f'  {shape.name:10s} {name:52s} ERROR {type(error).__name__}: {str(error)[:200]}')
        results.setdefault(shape.name, {})[name] = {'error': f'{type(error).__name__}: {str(error)[:300]}'}
    per = {p.name: [] for p in prepared}
    for _ in range(rounds):
      for p in prepared:
        try:
          per[p.name].append(p.time(3, runs))
        except Exception as error:
          per[p.name].append({'error': f'{type(error).__name__}: {str(error)[:300]}'})
    for p in prepared:
      timings = [t for t in per[p.name] if 'error' not in t]
      row = dict(p.info)
      if timings:
        row.update({k: statistics.median(t[k] for t in timings) for k in timings[0]})
        log(
          f'  {shape.name:10s} {p.name:52s} fwd {row["fwd_ms"]:8.2f} ms  fwd+bwd {row["fwdbwd_ms"]:8.2f} ms'
          + (f'  compile {row["fwdbwd_compile_s"]:.2f} s' if 'fwdbwd_compile_s' in row else '')
          + (f'  [{row["path"]}]' if 'path' in row else '')
        )
      else:
        row['error'] = per[p.name][0]['error']
        log(f'  {shape.name:10s} {p.name:52s} ERROR {row["error"][:200]}')
      results.setdefault(shape.name, {})[p.name] = row
  return results


# ---------------------------------------------------------------------------------------------
# Smoke test


def _rel(a, b):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def _max_rel(got, want):
  return max(_rel(a, b) for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True))


def _layer(cell, **options):
  import jaxrnn

  return {'lstm': jaxrnn.LSTM, 'gru': jaxrnn.GRU, 'rnn': jaxrnn.RNN}[cell](**options)


def _options_text(options) -> str:
  return ','.join(f'{key}={value}' for key, value in options.items())


def smoke(log, torch_device):
  """Returns a list of ``{'check', 'ok', 'detail'}``; logs each line as it is decided."""
  checks = []

  def record(check, ok, detail, peer=False):
    checks.append({'check': check, 'ok': bool(ok), 'detail': detail, 'peer': peer})
    log(f'  {"PASS" if ok else "FAIL"}  {check}: {detail}')

  def attempt(check, fn):
    try:
      fn()
    except Exception as error:
      record(check, False, f'{type(error).__name__}: {str(error)[:300]}')
      traceback.print_exc()

  rng = np.random.default_rng(0)
  batch, steps, features, hidden = 5, 7, 3, 8
  lengths = np.array([7, 3, 0, 1, 5], np.int32)
  x = rng.normal(size=(batch, steps, features)).astype(np.float32)
  x_nan = x.copy()
  x_nan[np.arange(steps)[None, :] >= lengths[:, None]] = np.nan  # padding is never read
  cpu = jax.devices('cpu')[0]

  def on_cpu(fn, *args):
    with jax.default_device(cpu):
      return jax.tree.map(np.asarray, jax.jit(fn)(*jax.device_put(args, cpu)))

  def padding():
    for cell in ('rnn', 'lstm', 'gru'):
      for path in ({'fused_backward': True}, {'fused_backward': False}, {'loop': 'pallas'}):
        layer = _layer(cell, hidden_size=hidden, num_layers=2, bidirectional=True, **path)
        variables = layer.init(jax.random.key(1), x[:1])
        reference = on_cpu(lambda v, x, n, layer=layer: layer.apply(v, x, n), variables, x, lengths)
        outputs, final = jax.jit(layer.apply)(variables, jnp.asarray(x_nan), jnp.asarray(lengths))
        outputs, final = jax.tree.map(np.asarray, (outputs, final))
        h = final.h if cell == 'lstm' else final
        padding_zero = bool(np.all(outputs[np.arange(steps)[None, :] >= lengths[:, None]] == 0))
        last = lengths - 1
        forward_ok = all(
          np.array_equal(outputs[b, last[b], :hidden], h[2, b]) for b in range(batch) if lengths[b]
        )
        backward_ok = all(np.array_equal(outputs[b, 0, hidden:], h[3, b]) for b in range(batch) if lengths[b])
        empty_ok = np.all(h[:, 2] == 0)
        error = _max_rel((outputs, final), reference)
        record(
          f'padding {cell} {_options_text(path)}',
          padding_zero and forward_ok and backward_ok and empty_ok and error < 2e-3 and np.isfinite(error),
          f'padding exactly 0: {padding_zero}, h_n == last valid output (fwd {forward_ok}, bwd {backward_ok}), '
          f'length 0 keeps the initial carry: {bool(empty_ok)}, rel. error vs CPU (TF32 default) {error:.1e}',
        )

  def torch_parity():
    import torch

    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
      _torch_parity(torch)
    finally:  # the timings use PyTorch's defaults
      torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved

  def _torch_parity(torch):
    import jaxrnn

    full = np.array([7, 3, 6, 1, 5])  # PyTorch's packed sequences take no length 0
    for cell in ('rnn', 'lstm', 'gru'):
      cls = {'rnn': torch.nn.RNN, 'lstm': torch.nn.LSTM, 'gru': torch.nn.GRU}[cell]
      torch.manual_seed(0)
      module = cls(features, hidden, num_layers=2, bidirectional=True, batch_first=True).to(torch_device)
      layer, variables = jaxrnn.interop.from_torch(copy.deepcopy(module).cpu())
      xt = torch.from_numpy(x).to(torch_device)
      packed = torch.nn.utils.rnn.pack_padded_sequence(
        xt, torch.from_numpy(full), batch_first=True, enforce_sorted=False
      )
      out, final = module(packed)
      out = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=steps)[0]
      out.sum().backward()
      want_grad = module.weight_hh_l0.grad.detach().cpu().numpy().T
      for fused in (True, False):
        layer_ = layer.clone(fused_backward=fused)
        with jax.default_matmul_precision('highest'):
          ours, our_final = jax.jit(layer_.apply)(variables, x, full)
          grad = jax.jit(jax.grad(lambda v, layer_=layer_: jnp.sum(layer_.apply(v, x, full)[0])))(variables)
        h_t = final[0] if cell == 'lstm' else final
        errors = (
          _rel(ours, out.detach().cpu().numpy()),
          _rel(our_final.h if cell == 'lstm' else our_final, h_t.detach().cpu().numpy()),
          _rel(grad['params']['l0']['w_hh'], want_grad),
        )
        record(
          f'pytorch {cell} fused_backward={fused} ({torch_device})',
          max(errors) < 1e-5,
          'rel. error outputs {:.1e}, h_n {:.1e}, grad w_hh {:.1e} (float32, TF32 off)'.format(*errors),
        )

  def gradients():
    for cell in ('rnn', 'lstm', 'gru'):
      grads = {}
      paths = {
        'autodiff': {'fused_backward': False},
        'fused': {'fused_backward': True},
        'pallas': {'loop': 'pallas'},
      }
      for path, options in paths.items():
        layer = _layer(cell, hidden_size=hidden, num_layers=2, bidirectional=True, **options)
        variables = layer.init(jax.random.key(2), x[:1])

        def loss(v, layer=layer):
          outputs, final = layer.apply(v, x, lengths)
          return jnp.sum(outputs * jnp.cos(outputs)) + sum(
            jnp.sum(leaf**2) for leaf in jax.tree.leaves(final)
          )

        with jax.default_matmul_precision('highest'):
          grads[path] = jax.jit(jax.grad(loss))(variables)
      for path in grads:
        if path == 'autodiff':
          continue
        error = _max_rel(grads[path], grads['autodiff'])
        # Triton's float32 dot may use TF32 whatever JAX's matmul precision says.
        bound = 2e-3 if path == 'pallas' else 1e-5
        record(
          f'gradients {cell} {path} vs autodiff', error < bound, f'max rel. error over parameters {error:.1e}'
        )

  def bfloat16():
    shape = cases.Shape('bf16', 'lstm', 1, 1, 16, 64, 32, 64)
    xb, _ = shape.data()
    for dtype_options in ({'dtype': jnp.bfloat16},):
      layer = _layer('lstm', hidden_size=64, **dtype_options)
      base = layer.clone(dtype=None)
      variables = base.init(jax.random.key(3), xb[:1])
      with jax.default_matmul_precision('highest'):
        want = jax.jit(base.apply)(variables, xb)[0]
        want_grad = jax.jit(jax.grad(lambda v, base=base: jnp.sum(base.apply(v, xb)[0])))(variables)
      got = jax.jit(layer.apply)(variables, xb)[0]
      grad = jax.jit(jax.grad(lambda v, layer=layer: jnp.sum(layer.apply(v, xb)[0].astype(jnp.float32))))(
        variables
      )
      out_error = float(jnp.max(jnp.abs(got.astype(jnp.float32) - want)))
      grad_error = _max_rel(grad, want_grad)
      record(
        'bfloat16 LSTM vs float32',
        got.dtype == jnp.bfloat16 and out_error < 2e-2 and grad_error < 2e-2,
        f'outputs max abs error {out_error:.1e}, weight gradients max rel. error {grad_error:.2%}',
      )

  def tf32():
    layer = _layer('lstm', hidden_size=64)
    xb = rng.normal(size=(16, 64, 32)).astype(np.float32)
    variables = layer.init(jax.random.key(4), xb[:1])
    with jax.default_matmul_precision('highest'):
      want = jax.jit(layer.apply)(variables, xb)[0]
    got = jax.jit(layer.apply)(variables, xb)[0]
    error = _rel(got, want)
    record(
      'float32 default precision vs highest (scan)', error < 1e-2, f'rel. error {error:.1e} (TF32 if > 1e-6)'
    )

  def cudnn_peer():
    """``jax.experimental.rnn`` (cuDNN) against jaxrnn on the same weights: forward and gradient."""
    from jax.experimental import rnn

    import jaxrnn

    full = np.array([7, 3, 6, 1, 5], np.int32)
    for bidirectional, lengths_ in ((False, np.full(batch, steps, np.int32)), (True, full)):
      directions = 2 if bidirectional else 1
      flat = rnn.init_lstm_weight(jax.random.key(5), features, hidden, 2, bidirectional)
      layer = jaxrnn.LSTM(hidden, num_layers=2, bidirectional=bidirectional)

      def as_variables(flat, layer=layer, bidirectional=bidirectional):
        w_ih, w_hh, b_ih, b_hh = rnn.unpack_lstm_weights(flat, features, hidden, 2, bidirectional)
        names = layer.config.param_names
        return {
          'params': {
            n: dict(w_ih=w_ih[i].T, w_hh=w_hh[i].T, b_ih=b_ih[i], b_hh=b_hh[i]) for i, n in enumerate(names)
          }
        }

      def ours(flat, layer=layer, lengths_=lengths_):
        return layer.apply(as_variables(flat), x, lengths_)[0]

      def theirs(flat, directions=directions, lengths_=lengths_, bidirectional=bidirectional):
        h0 = jnp.zeros((2 * directions, batch, hidden))
        y = rnn.lstm(
          x,
          h0,
          h0,
          flat,
          jnp.asarray(lengths_),
          input_size=features,
          hidden_size=hidden,
          num_layers=2,
          dropout=0.0,
          bidirectional=bidirectional,
        )[0]
        return jnp.where((np.arange(steps)[None, :] < lengths_[:, None])[..., None], y, 0)

      with jax.default_matmul_precision('highest'):
        forward = _rel(jax.jit(theirs)(flat), jax.jit(ours)(flat))
        loss = lambda f: lambda w: jnp.sum(f(w) * jnp.cos(f(w)))  # noqa: E731
        grad = _rel(jax.jit(jax.grad(loss(theirs)))(flat), jax.jit(jax.grad(loss(ours)))(flat))
      record(
        f'peer: jax.experimental.rnn (cuDNN) LSTM, 2 layers, bidirectional={bidirectional}',
        max(forward, grad) < 1e-4,
        f'vs jaxrnn on the same weights: outputs rel. error {forward:.1e}, weight gradient {grad:.1e}',
        peer=True,
      )

  attempt('padding', padding)
  attempt('pytorch parity', torch_parity)
  attempt('gradients', gradients)
  attempt('bfloat16', bfloat16)
  attempt('tf32', tf32)
  if jax.default_backend() == 'gpu':
    attempt('peer: jax.experimental.rnn', cudnn_peer)
  return checks


# ---------------------------------------------------------------------------------------------
# Report


def environment(torch_device):
  import flax

  device = jax.devices()[0]
  env = {
    'date': datetime.datetime.now().strftime('%Y-%m-%d %H:%M'),
    'device': f'{device.platform}: {getattr(device, "device_kind", device)}',
    'jax': jax.__version__,
    'flax': flax.__version__,
  }
  try:
    import torch

    env['torch'] = torch.__version__
    if torch_device == 'cuda':
      env['torch_device'] = torch.cuda.get_device_name(0)
      env['cudnn'] = str(torch.backends.cudnn.version())
  except ImportError:
    env['torch'] = 'not installed'
  return env


def table(results):
  lines = [
    '| shape | framework | fwd ms | fwd+bwd ms | compile fwd / fwd+bwd s | peak fwd+bwd MB | fwd+bwd vs jaxrnn (same dtype) | jaxrnn path |',
    '|---|---|---|---|---|---|---|---|',
  ]
  for shape, rows in results.items():
    if 'skipped' in rows:
      lines.append(f'| {shape} | skipped ({rows["skipped"]}) | | | | | | |')
      continue
    for name, r in rows.items():
      if 'error' in r:
        lines.append(f'| {shape} | {name} | error: {r["error"][:80]} | | | | | |')
        continue
      bf16 = 'bfloat16' in name
      reference = rows.get('jaxrnn[dtype=bfloat16]' if bf16 else 'jaxrnn', {})
      ratio = (
        f'{r["fwdbwd_ms"] / reference["fwdbwd_ms"]:.2f}x'
        if 'fwdbwd_ms' in reference and r is not reference
        else ''
      )
      compile_s = f'{r["fwd_compile_s"]:.2f} / {r["fwdbwd_compile_s"]:.2f}' if 'fwd_compile_s' in r else '-'
      peak = f'{r["fwdbwd_peak_mb"]:.0f}' if 'fwdbwd_peak_mb' in r else '-'
      lines.append(
        f'| {shape} | {name} | {r["fwd_ms"]:.2f} | {r["fwdbwd_ms"]:.2f} | {compile_s} | {peak} | {ratio} | {r.get("path", "")} |'
      )
  return '\n'.join(lines)


def plot(sweep, path):
  import matplotlib

  matplotlib.use('Agg')
  import matplotlib.pyplot as plt

  fig, ax = plt.subplots(figsize=(6, 4))
  names = sorted({n for rows in sweep.values() if 'skipped' not in rows for n in rows})
  for name in names:
    points = [
      (int(s.split('=')[1]), rows[name]['fwdbwd_ms'])
      for s, rows in sweep.items()
      if name in rows and 'fwdbwd_ms' in rows[name]
    ]
    if points:
      ax.plot(*zip(*points, strict=True), marker='o', label=name)
  ax.set_xlabel('T (time steps)')
  ax.set_ylabel('forward+backward, ms (median)')
  ax.set_xscale('log')
  ax.set_yscale('log')
  ax.set_title('S1 shape (LSTM B=64 F=123 H=320) on GPU vs sequence length')
  ax.legend(fontsize=8)
  ax.grid(alpha=0.3)
  fig.savefig(path, dpi=100, bbox_inches='tight')


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--out', default=str(HERE / 'results'), help='folder for the JSON, Markdown and plot')
  parser.add_argument('--quick', action='store_true', help='S1, S3, S5, one round, no T sweep')
  parser.add_argument('--runs', type=int, default=10)
  parser.add_argument('--rounds', type=int, default=2)
  parser.add_argument('--budget-s', type=float, default=420, help='stop starting new shapes after this')
  parser.add_argument('--shapes', help='comma-separated subset of ' + ','.join(FULL))
  parser.add_argument('--skip-smoke', action='store_true')
  parser.add_argument('--allow-cpu', action='store_true', help='run on the CPU backend with tiny shapes')
  args = parser.parse_args()

  start = time.perf_counter()
  deadline = start + args.budget_s
  gpu = jax.default_backend() == 'gpu'
  if not gpu and not args.allow_cpu:
    parser.error(f'no GPU: JAX runs on {jax.default_backend()!r} (use --allow-cpu to exercise the script)')
  torch_device = 'cuda' if gpu else 'cpu'
  out = pathlib.Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  stamp = datetime.datetime.now().strftime('%Y-%m-%d-%H%M')
  env = environment(torch_device)
  log_lines = []

  def log(line):
    print(line, flush=True)
    log_lines.append(line)

  log(' | '.join(f'{k} {v}' for k, v in env.items()))
  report = {'environment': env, 'smoke': [], 'results': {}, 'sweep': {}}

  def save():
    report['elapsed_s'] = time.perf_counter() - start
    (out / f'gpu-{stamp}.json').write_text(json.dumps(report, indent=1))

  if not args.skip_smoke:
    log('smoke test:')
    report['smoke'] = smoke(log, torch_device)
    save()

  shapes = [
    cases.SHAPES[s] for s in (args.shapes.split(',') if args.shapes else QUICK if args.quick else FULL)
  ]
  rounds = 1 if args.quick else args.rounds
  if not gpu:  # exercise every code path in seconds
    shapes = [dataclasses.replace(s, batch=2, steps=6, features=5, hidden=4) for s in shapes]
  log('timings:')
  report['results'] = suite(shapes, candidates, rounds, args.runs, torch_device, deadline, log)
  save()
  if not args.quick:
    steps = SWEEP_STEPS if gpu else (3, 6)
    sweep_shapes = [cases.SHAPES['S1'].with_steps(t) for t in steps]
    if not gpu:
      sweep_shapes = [dataclasses.replace(s, batch=2, features=5, hidden=4) for s in sweep_shapes]
    log('time vs T (S1 shape):')
    report['sweep'] = suite(sweep_shapes, lambda _: SWEEP, 1, args.runs, torch_device, deadline + 60, log)
    save()
    plot(report['sweep'], out / f'gpu-{stamp}-time_vs_T.png')

  own = [c for c in report['smoke'] if not c.get('peer')]
  failed = [c['check'] for c in own if not c['ok']]
  smoke_line = f'smoke test (jaxrnn): {len(own) - len(failed)} of {len(own)} passed' + (
    f'; FAILED: {", ".join(failed)}' if failed else ''
  )
  smoke_line += ''.join(
    f'\n- {"PASS" if c["ok"] else "FAIL"} {c["check"]}: {c["detail"]}' for c in report['smoke']
  )
  text = (
    ' | '.join(f'{k} {v}' for k, v in env.items())
    + f'\n\n{smoke_line}\n\n{table(report["results"])}\n\nTime vs T (S1 shape):\n\n{table(report["sweep"])}\n'
  )
  (out / f'gpu-{stamp}.md').write_text(text)
  print('\n' + text)
  print(f'wrote {out}/gpu-{stamp}.json, .md; elapsed {time.perf_counter() - start:.0f} s')


if __name__ == '__main__':
  main()
