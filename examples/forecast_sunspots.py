"""Forecasting yearly sunspot numbers with an LSTM (the series ships with statsmodels).

Trained on 1700-1968 to predict next year's value from the past; then forecasts the
40 years 1969-2008 recursively: one sequence call reads the whole history, and
`layer.step` continues from its final state, feeding each forecast back in. Compared
with two naive baselines: persistence (the last known value) and the 11-year solar
cycle (the value 11 years earlier). Writes a plot of forecast vs truth.

    python examples/forecast_sunspots.py              # under a minute on a 2-core CPU
    python examples/forecast_sunspots.py --steps 20   # smoke run
"""

import argparse
import os

import install_hint

try:  # the `examples` extra's packages; if one is missing, say how to install it
  import flax.linen as nn
  import jax
  import jax.numpy as jnp
  import numpy as np
  import optax
  import statsmodels.api as sm
  from common import fit
  from common import make_train_step

  import jaxrnn
except ModuleNotFoundError as error:
  install_hint.exit_if_optional(error)

SCALE = 100.0


class Forecaster(nn.Module):
  hidden: int = 64

  def setup(self):
    self.lstm = jaxrnn.LSTM(self.hidden, num_layers=2)
    self.head = nn.Dense(1)

  def __call__(self, series):
    """Next-year predictions at every step: ``[B, T, 1] -> [B, T, 1]``, and the final state."""
    outputs, carry = self.lstm(series)
    return self.head(outputs), carry

  def step(self, value, carry):
    """One more year: ``[B, 1] -> [B, 1]``."""
    y, carry = self.lstm.step(value, carry)
    return self.head(y), carry


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--steps', type=int, default=1500)
  parser.add_argument('--window', type=int, default=60, help='years per training sequence')
  parser.add_argument('--horizon', type=int, default=40, help='years to forecast')
  parser.add_argument('--lr', type=float, default=3e-3)
  parser.add_argument('--ckpt-dir', default='checkpoints/forecast_sunspots')
  parser.add_argument('--resume', action='store_true', help='continue from the newest checkpoint')
  parser.add_argument('--plot', default='sunspots_forecast.png')
  args = parser.parse_args()
  install_hint.require('matplotlib')  # for the plot at the end

  data = sm.datasets.sunspots.load_pandas().data
  years, values = data['YEAR'].to_numpy().astype(int), data['SUNACTIVITY'].to_numpy().astype(np.float32)
  history, future = values[: -args.horizon], values[-args.horizon :]
  series = history / SCALE
  print(
    f'sunspots {years[0]}-{years[-1]}: train on {years[0]}-{years[-args.horizon - 1]}, forecast {years[-args.horizon]}-{years[-1]}'
  )

  model = Forecaster()
  params = model.init(jax.random.key(0), jnp.zeros((1, args.window, 1)))
  optimizer = optax.adam(optax.cosine_decay_schedule(args.lr, args.steps, 0.05))

  def loss_fn(params, inputs, targets):
    predictions, _ = model.apply(params, inputs[..., None])
    return jnp.mean((predictions[..., 0] - targets) ** 2)

  def next_batch(rng, step):
    starts = rng.integers(0, len(series) - args.window - 1, size=32)
    windows = np.stack([series[s : s + args.window + 1] for s in starts])
    return windows[:, :-1], windows[:, 1:]

  params, _, _ = fit(
    make_train_step(loss_fn, optimizer),
    params,
    optimizer.init(params),
    next_batch,
    steps=args.steps,
    ckpt_dir=args.ckpt_dir,
    resume=args.resume,
    settings=vars(args),
  )

  @jax.jit
  def forecast(params, history):
    predictions, carry = model.apply(params, history[None, :, None])  # read all of history once
    first = predictions[:, -1]  # [1, 1]: next year

    def year(state, _):
      carry, value = state
      nxt, carry = model.apply(params, value, carry, method='step')
      return (carry, nxt), value[0, 0]

    _, path = jax.lax.scan(year, (carry, first), None, length=args.horizon)
    return path

  predicted = np.maximum(np.asarray(forecast(params, series)) * SCALE, 0.0)
  persistence = np.full(args.horizon, history[-1])
  cycle = values[len(history) - 11 : len(history) - 11 + args.horizon]
  mae = {
    name: float(np.mean(np.abs(p - future)))
    for name, p in [('LSTM', predicted), ('persistence', persistence), ('11-year cycle', cycle)]
  }
  for name, error in mae.items():
    print(f'  {args.horizon}-year forecast MAE, {name:14s} {error:6.1f}')

  import matplotlib

  matplotlib.use('Agg')
  import matplotlib.pyplot as plt

  fig, ax = plt.subplots(figsize=(10, 4))
  ax.plot(years[-140:], values[-140:], color='k', label='observed')
  forecast_years = years[-args.horizon :]
  ax.plot(forecast_years, predicted, color='tab:red', label=f'LSTM forecast (MAE {mae["LSTM"]:.1f})')
  ax.plot(
    forecast_years, cycle, color='tab:blue', ls='--', label=f'11-year cycle (MAE {mae["11-year cycle"]:.1f})'
  )
  ax.plot(
    forecast_years, persistence, color='tab:gray', ls=':', label=f'persistence (MAE {mae["persistence"]:.1f})'
  )
  ax.axvline(forecast_years[0] - 0.5, color='0.7')
  ax.set_xlabel('year')
  ax.set_ylabel('sunspot number')
  ax.legend(loc='upper left', fontsize=8)
  ax.set_title(f'{args.horizon}-year recursive forecast from {forecast_years[0]}')
  fig.savefig(args.plot, dpi=100, bbox_inches='tight')
  print(f'wrote {os.path.abspath(args.plot)}')


if __name__ == '__main__':
  main()
