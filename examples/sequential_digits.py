"""Handwritten digits read row by row by an LSTM (scikit-learn's 8x8 digits, no download).

Each image is a sequence of 8 rows of 8 pixels; the LSTM's final state classifies it.
Prints the held-out accuracy (above 95% with the defaults) and plots misclassified digits.

    python examples/sequential_digits.py              # under a minute on a 2-core CPU
    python examples/sequential_digits.py --steps 20   # smoke run
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
  from common import fit
  from common import make_train_step
  from sklearn.datasets import load_digits
  from sklearn.model_selection import train_test_split

  import jaxrnn
except ModuleNotFoundError as error:
  install_hint.exit_if_optional(error)


class RowReader(nn.Module):
  hidden: int = 128
  init_scheme: str = 'pytorch'

  @nn.compact
  def __call__(self, rows):  # rows: [B, T=8, F=8]
    _, (h_n, _) = jaxrnn.LSTM(self.hidden, init_scheme=self.init_scheme)(rows)
    return nn.Dense(10)(h_n[-1])  # the final state: one prediction per image


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--steps', type=int, default=1500)
  parser.add_argument('--batch-size', type=int, default=64)
  parser.add_argument('--lr', type=float, default=3e-3)
  parser.add_argument(
    '--init', default='pytorch', choices=['pytorch', 'flax', 'keras'], help="the LSTM's init_scheme"
  )
  parser.add_argument('--seed', type=int, default=0, help='seed of the initial parameters')
  parser.add_argument('--ckpt-dir', default='checkpoints/sequential_digits')
  parser.add_argument('--resume', action='store_true', help='continue from the newest checkpoint')
  parser.add_argument('--plot', default='digits_errors.png')
  args = parser.parse_args()
  install_hint.require('matplotlib')  # for the plot at the end

  digits = load_digits()
  images = (digits.images / 16.0).astype(np.float32)  # [N, 8 rows, 8 pixels]
  x_train, x_test, y_train, y_test = train_test_split(
    images, digits.target, test_size=0.25, random_state=0, stratify=digits.target
  )
  print(f'{len(images)} digits: {len(x_train)} train, {len(x_test)} held out')

  model = RowReader(init_scheme=args.init)
  params = model.init(jax.random.key(args.seed), x_train[:1])
  optimizer = optax.adam(optax.cosine_decay_schedule(args.lr, args.steps, 0.05))

  def loss_fn(params, rows, labels):
    return optax.softmax_cross_entropy_with_integer_labels(model.apply(params, rows), labels).mean()

  def next_batch(rng, step):
    index = rng.choice(len(x_train), args.batch_size)
    return x_train[index], y_train[index]

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

  predictions = np.asarray(jnp.argmax(jax.jit(model.apply)(params, x_test), -1))
  accuracy = (predictions == y_test).mean()
  print(f'held-out accuracy: {accuracy:.3f} ({len(x_test)} digits)')

  import matplotlib

  matplotlib.use('Agg')
  import matplotlib.pyplot as plt

  wrong = np.flatnonzero(predictions != y_test)[:16]
  fig, axes = plt.subplots(2, 8, figsize=(10, 3))
  for ax, i in zip(axes.ravel(), list(wrong) + [None] * 16, strict=False):
    ax.axis('off')
    if i is not None:
      ax.imshow(x_test[i], cmap='gray_r')
      ax.set_title(f'{y_test[i]} read as {predictions[i]}', fontsize=8)
  fig.suptitle(f'Misread digits (held-out accuracy {accuracy:.1%})')
  fig.savefig(args.plot, dpi=100, bbox_inches='tight')
  print(f'wrote {os.path.abspath(args.plot)}')


if __name__ == '__main__':
  main()
