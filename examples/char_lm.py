"""Character-level LSTM language model on Python's own standard library source.

Trains on the .py files that ship with this Python (no download), checkpoints
with orbax, then generates code from a batch of prompts of different lengths
with a jit-compiled decoding loop (the prompt is read by the sequence call, the
continuation by `layer.step`, both with the same parameters).

    python examples/char_lm.py                       # 8 minutes on a 2-core CPU, 1.9 bits/char
    python examples/char_lm.py --steps 3 --hidden 32 # smoke run
    python examples/char_lm.py --resume              # continue from the last checkpoint
"""

import argparse
import functools
import pathlib
import sysconfig
import time

import install_hint

try:  # the `examples` extra's packages; if one is missing, say how to install it
  import flax.linen as nn
  import jax
  import jax.numpy as jnp
  import numpy as np
  import optax
  from common import fit
  from common import make_train_step

  import jaxrnn
except ModuleNotFoundError as error:
  install_hint.exit_if_optional(error)

# Tokens: tab, newline and printable ASCII; anything else reads as '?'.
CHARS = '\t\n' + ''.join(chr(c) for c in range(32, 127))
TABLE = np.full(0x110000, CHARS.index('?'), np.int32)
TABLE[[ord(c) for c in CHARS]] = np.arange(len(CHARS))


def encode(text):
  return TABLE[np.frombuffer(text.encode('utf-32-le'), np.uint32)]


def decode(tokens):
  return ''.join(CHARS[t] for t in tokens)


def load_stdlib_text(max_chars):
  """Concatenated source of the standard library's top-level .py files, in a fixed order."""
  root = pathlib.Path(sysconfig.get_paths()['stdlib'])
  parts, size = [], 0
  for path in sorted(root.glob('*.py')):
    text = path.read_text(encoding='utf-8', errors='replace')
    parts.append(text)
    size += len(text)
    if size >= max_chars:
      break
  return encode(''.join(parts)[:max_chars])


class CharLM(nn.Module):
  vocab: int
  hidden: int = 256
  layers: int = 2

  def setup(self):
    self.embed = nn.Embed(self.vocab, 64)
    self.lstm = jaxrnn.LSTM(self.hidden, num_layers=self.layers)
    self.head = nn.Dense(self.vocab)

  def __call__(self, tokens, lengths=None):
    """Logits ``[B, T, V]`` of the next character at every step, and the final state."""
    outputs, carry = self.lstm(self.embed(tokens), lengths)
    return self.head(outputs), carry

  def step(self, tokens, carry):
    """Logits ``[B, V]`` after one more character ``tokens [B]``."""
    y, carry = self.lstm.step(self.embed(tokens), carry)
    return self.head(y), carry


def windows(data, rng, batch_size, seq_len):
  starts = rng.integers(0, len(data) - seq_len - 1, size=batch_size)
  chunk = np.stack([data[s : s + seq_len + 1] for s in starts])
  return chunk[:, :-1], chunk[:, 1:]


def make_generator(model, num_steps):
  @jax.jit
  def generate(params, prompts, lengths, key, temperature):
    logits, carry = model.apply(params, prompts, lengths)  # the carry after each prompt's own end
    last = jnp.take_along_axis(logits, (lengths - 1)[:, None, None], axis=1)[:, 0]
    key, first_key = jax.random.split(key)
    first = jax.random.categorical(first_key, last / temperature).astype(prompts.dtype)
    step_fn = functools.partial(model.apply, params, method='step')
    tokens, _ = jaxrnn.generate(step_fn, carry, first, num_steps - 1, key, temperature=temperature)
    return jnp.concatenate([first[:, None], tokens], axis=1)

  return generate


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--steps', type=int, default=1500, help='training steps')
  parser.add_argument('--batch-size', type=int, default=32)
  parser.add_argument('--seq-len', type=int, default=128)
  parser.add_argument('--hidden', type=int, default=256)
  parser.add_argument('--layers', type=int, default=2)
  parser.add_argument('--lr', type=float, default=3e-3)
  parser.add_argument('--max-chars', type=int, default=3_000_000, help='characters of stdlib source to read')
  parser.add_argument('--ckpt-dir', default='checkpoints/char_lm')
  parser.add_argument('--ckpt-every', type=int, default=500)
  parser.add_argument('--resume', action='store_true', help='continue from the newest checkpoint')
  parser.add_argument('--gen-len', type=int, default=300, help='characters to generate per prompt')
  parser.add_argument('--temperature', type=float, default=0.7)
  args = parser.parse_args()

  data = load_stdlib_text(args.max_chars)
  split = int(0.95 * len(data))
  train, valid = data[:split], data[split:]
  print(
    f'{len(data):,} characters of stdlib source ({len(CHARS)} symbols); jax {jax.__version__} on {jax.devices()[0]}'
  )

  model = CharLM(len(CHARS), args.hidden, args.layers)
  params = model.init(jax.random.key(0), jnp.zeros((1, args.seq_len), jnp.int32))
  schedule = optax.cosine_decay_schedule(args.lr, max(args.steps, 1), alpha=0.1)
  optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(schedule))

  def loss_fn(params, inputs, targets):
    logits, _ = model.apply(params, inputs)
    return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()

  params, _, _ = fit(
    make_train_step(loss_fn, optimizer),
    params,
    optimizer.init(params),
    lambda rng, step: windows(train, rng, args.batch_size, args.seq_len),
    steps=args.steps,
    ckpt_dir=args.ckpt_dir,
    resume=args.resume,
    ckpt_every=args.ckpt_every,
    settings=vars(args),
  )

  eval_loss = jax.jit(loss_fn)
  valid_rng = np.random.default_rng(123)
  losses = [float(eval_loss(params, *windows(valid, valid_rng, 64, args.seq_len))) for _ in range(8)]
  print(f'validation: {np.mean(losses):.3f} nats/char = {np.mean(losses) / np.log(2):.2f} bits/char')

  prompts_text = ['def ', 'import os\n', 'class Parser:\n    def __init__(self', '    for ']
  prompts, lengths = jaxrnn.pad_sequences([encode(p) for p in prompts_text])
  generate = make_generator(model, args.gen_len)
  key = jax.random.key(0)
  tokens = generate(params, prompts, lengths, key, args.temperature).block_until_ready()  # compiles
  started = time.perf_counter()
  tokens = generate(params, prompts, lengths, key, args.temperature).block_until_ready()
  seconds = time.perf_counter() - started
  for text, continuation in zip(prompts_text, np.asarray(tokens), strict=True):
    print(f'\n--- prompt {text!r}\n{text}{decode(continuation)}')
  print(
    f'\ngenerated {tokens.size} characters in {seconds * 1000:.0f} ms: {tokens.size / seconds:,.0f} tokens/s (batch {len(prompts_text)})'
  )


if __name__ == '__main__':
  main()
