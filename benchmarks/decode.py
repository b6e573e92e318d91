"""How fast is jit-compiled autoregressive decoding with `layer.step` and `jaxrnn.generate`?

Character-LM shape of examples/char_lm.py (embedding 64, 2-layer LSTM H=256, vocab 97),
256 new tokens after a 32-token prompt, greedy; batch 1 and 64.

    python -m benchmarks.decode
"""

import argparse
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

import jaxrnn
from benchmarks.common import compile_seconds
from benchmarks.common import environment
from benchmarks.common import median_seconds

VOCAB, PROMPT = 97, 32


class CharLM(nn.Module):
  def setup(self):
    self.embed = nn.Embed(VOCAB, 64)
    self.lstm = jaxrnn.LSTM(256, num_layers=2)
    self.head = nn.Dense(VOCAB)

  def __call__(self, tokens):
    outputs, carry = self.lstm(self.embed(tokens))
    return self.head(outputs), carry

  def step(self, tokens, carry):
    y, carry = self.lstm.step(self.embed(tokens), carry)
    return self.head(y), carry


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--new-tokens', type=int, default=256)
  parser.add_argument('--runs', type=int, default=10)
  args = parser.parse_args()
  model = CharLM()
  params = model.init(jax.random.key(0), jnp.zeros((1, PROMPT), jnp.int32))

  def generate(params, prompts):
    logits, carry = model.apply(params, prompts)
    first = jnp.argmax(logits[:, -1], -1)
    step_fn = functools.partial(model.apply, params, method='step')
    return jaxrnn.generate(step_fn, carry, first, args.new_tokens)[0]

  print(environment())
  print('| batch | new tokens | compile s | median ms | tokens/s |\n|---|---|---|---|---|')
  for batch in (1, 64):
    prompts = jax.random.randint(jax.random.key(1), (batch, PROMPT), 0, VOCAB)
    compile_s = compile_seconds(generate, params, prompts)
    seconds = median_seconds(jax.jit(generate), params, prompts, runs=args.runs)
    tokens = batch * args.new_tokens
    print(
      f'| {batch} | {args.new_tokens} | {compile_s:.2f} | {seconds * 1000:.1f} | {tokens / seconds:,.0f} |'
    )


if __name__ == '__main__':
  main()
