"""Does compile time stay small and independent of T? A 4-layer bidirectional LSTM.

python -m benchmarks.compile_time
"""

import jax
import jax.numpy as jnp

import jaxrnn
from benchmarks.common import compile_seconds
from benchmarks.common import environment


def main():
  layer = jaxrnn.LSTM(256, num_layers=4, bidirectional=True)
  variables = layer.init(jax.random.key(0), jnp.zeros((1, 2, 128)))

  def loss(variables, x, lengths):
    return jnp.sum(layer.apply(variables, x, lengths)[0])

  print(environment())
  print('| T | compile forward s | compile forward+backward s |\n|---|---|---|')
  for steps in (50, 500, 5000):
    x = jnp.zeros((16, steps, 128))
    lengths = jnp.full(16, steps)
    forward = compile_seconds(lambda v, x, n: layer.apply(v, x, n)[0], variables, x, lengths)
    backward = compile_seconds(jax.grad(loss), variables, x, lengths)
    print(f'| {steps} | {forward:.2f} | {backward:.2f} |')


if __name__ == '__main__':
  main()
