"""Quickstart: a bidirectional GRU on ragged sequences, trained with optax.

Task: read a variable-length sequence of digits and predict whether its sum is
odd. Sequences are padded to a common length and passed with `seq_lengths`, so
the padding never reaches the model (try `--no-lengths` to see the difference).

    python examples/quickstart.py            # about a minute on a laptop CPU
    python examples/quickstart.py --steps 20  # smoke run
"""

import argparse
import time

import install_hint

try:  # the `examples` extra's packages; if one is missing, say how to install it
  import jax
  import jax.numpy as jnp
  import numpy as np
  import optax
  from flax import linen as nn

  import jaxrnn
except ModuleNotFoundError as error:
  install_hint.exit_if_optional(error)

MAX_LEN = 16


class ParityClassifier(nn.Module):
  hidden_size: int = 64

  @nn.compact
  def __call__(self, digits, seq_lengths):
    x = jax.nn.one_hot(digits, 10)  # [B, T, 10]
    outputs, h_n = jaxrnn.GRU(self.hidden_size, bidirectional=True)(x, seq_lengths)
    # One prediction per sequence: the final state of both directions, [2, B, H] -> [B, 2H].
    summary = jnp.concatenate([h_n[0], h_n[1]], axis=-1)
    return nn.Dense(2)(summary)


def batch(rng, size):
  lengths = rng.integers(1, MAX_LEN + 1, size=size)
  digits = rng.integers(0, 10, size=(size, MAX_LEN))
  digits[np.arange(MAX_LEN)[None, :] >= lengths[:, None]] = 7  # odd padding: harmful if read
  labels = np.array([d[:n].sum() % 2 for d, n in zip(digits, lengths, strict=True)])
  return digits, lengths, labels


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--steps', type=int, default=1500)
  parser.add_argument('--batch-size', type=int, default=64)
  parser.add_argument('--no-lengths', action='store_true', help='ignore seq_lengths (reads the padding)')
  args = parser.parse_args()

  rng = np.random.default_rng(0)
  model = ParityClassifier()
  digits, lengths, labels = batch(rng, args.batch_size)
  params = model.init(jax.random.key(0), digits, lengths)
  optimizer = optax.adam(3e-3)
  opt_state = optimizer.init(params)

  @jax.jit
  def train_step(params, opt_state, digits, lengths, labels):
    def loss_fn(params):
      logits = model.apply(params, digits, lengths)
      return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = optimizer.update(grads, opt_state)
    return optax.apply_updates(params, updates), opt_state, loss

  start = time.perf_counter()
  for step in range(1, args.steps + 1):
    digits, lengths, labels = batch(rng, args.batch_size)
    if args.no_lengths:
      lengths = np.full_like(lengths, MAX_LEN)
    params, opt_state, loss = train_step(params, opt_state, digits, lengths, labels)
    if step % max(1, args.steps // 10) == 0:
      print(f'step {step:5d}  loss {float(loss):.4f}')

  digits, lengths, labels = batch(np.random.default_rng(1), 2000)
  if args.no_lengths:
    lengths = np.full_like(lengths, MAX_LEN)
  accuracy = (jnp.argmax(model.apply(params, digits, lengths), -1) == labels).mean()
  print(
    f'held-out accuracy {float(accuracy):.3f} after {args.steps} steps ({time.perf_counter() - start:.0f} s)'
  )


if __name__ == '__main__':
  main()
