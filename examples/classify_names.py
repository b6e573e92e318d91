"""Which language does a surname come from? A character-level bidirectional GRU.

Real surname lists by locale ship inside the `faker` package (no download). Names
have different lengths: batches are padded with `jaxrnn.pad_sequences` and the
layer reads `seq_lengths`, so no padding ever reaches the model. Reports the
held-out accuracy and writes a confusion-matrix plot.

    python examples/classify_names.py                  # about 2 minutes on a 2-core CPU
    python examples/classify_names.py --steps 20       # smoke run
    python examples/classify_names.py --resume         # continue from the last checkpoint
"""

import argparse
import functools
import importlib
import os

import install_hint

try:  # the `examples` extra's packages; if one is missing, say how to install it
  import faker.providers.person
  import flax.linen as nn
  import jax
  import jax.numpy as jnp
  import numpy as np
  import optax
  from common import fit
  from common import make_train_step
  from common import save_confusion_matrix

  import jaxrnn
except ModuleNotFoundError as error:
  install_hint.exit_if_optional(error)

# Faker locale -> language. Latin-script locales with a few hundred surnames each.
LOCALES = {
  'en_US': 'English',
  'de_DE': 'German',
  'fr_FR': 'French',
  'it_IT': 'Italian',
  'es_ES': 'Spanish',
  'nl_NL': 'Dutch',
  'fi_FI': 'Finnish',
  'sv_SE': 'Swedish',
  'ga_IE': 'Irish',
  'cs_CZ': 'Czech',
}


def load_names(max_per_language=500, seed=0):
  """Returns ``(names, labels, languages)``: surnames found in exactly one locale."""
  by_language = {}
  for locale, language in LOCALES.items():
    provider = importlib.import_module(f'{faker.providers.person.__name__}.{locale}').Provider
    by_language[language] = sorted(set(provider.last_names))
  counts = {}
  for names in by_language.values():
    for name in names:
      counts[name] = counts.get(name, 0) + 1
  rng = np.random.default_rng(seed)
  names, labels = [], []
  languages = list(by_language)
  for label, language in enumerate(languages):
    unique = [n for n in by_language[language] if counts[n] == 1]
    for name in rng.permutation(unique)[:max_per_language]:
      names.append(str(name))
      labels.append(label)
  return names, np.array(labels), languages


def split(names, labels, held_out=0.15, seed=0):
  """Stratified split: the same fraction of every language is held out."""
  rng = np.random.default_rng(seed)
  test = np.zeros(len(names), bool)
  for label in np.unique(labels):
    index = rng.permutation(np.flatnonzero(labels == label))
    test[index[: int(round(held_out * len(index)))]] = True
  return np.flatnonzero(~test), np.flatnonzero(test)


class NameClassifier(nn.Module):
  vocab: int
  num_classes: int
  hidden: int = 128
  init_scheme: str = 'pytorch'

  @nn.compact
  def __call__(self, chars, lengths, *, deterministic=True):
    x = nn.Embed(self.vocab, 32)(chars)  # [B, T, 32]
    gru = jaxrnn.GRU(self.hidden, num_layers=2, bidirectional=True, dropout=0.2, init_scheme=self.init_scheme)
    _, h_n = gru(x, lengths, deterministic=deterministic)
    summary = jnp.concatenate([h_n[-2], h_n[-1]], axis=-1)  # last layer, both directions: [B, 2H]
    return nn.Dense(self.num_classes)(summary)


class NamesData:
  """Surnames as character ids, the stratified split, and padded batches."""

  def __init__(self):
    self.names, self.labels, self.languages = load_names()
    alphabet = sorted(set(''.join(self.names)))
    self.char_index = {c: i + 1 for i, c in enumerate(alphabet)}  # 0 is padding
    self.vocab = len(alphabet) + 1
    self.encoded = [np.array([self.char_index[c] for c in name], np.int32) for name in self.names]
    self.train_index, self.test_index = split(self.names, self.labels)
    self.max_len = max(len(e) for e in self.encoded)

  def batch(self, index):
    """Returns ``(chars [B, T], lengths [B], labels [B])`` for the names at ``index``."""
    chars, lengths = jaxrnn.pad_sequences([self.encoded[i] for i in index], self.max_len)
    return chars, lengths, self.labels[index]

  def encode(self, name):
    return jaxrnn.pad_sequences([[self.char_index.get(c, 0) for c in name]], max(self.max_len, len(name)))


def loss_fn(model, params, chars, lengths, targets, key):
  logits = model.apply(params, chars, lengths, deterministic=False, rngs={'dropout': key})
  return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--steps', type=int, default=1200)
  parser.add_argument('--batch-size', type=int, default=64)
  parser.add_argument('--hidden', type=int, default=128)
  parser.add_argument('--lr', type=float, default=3e-3)
  parser.add_argument(
    '--init', default='pytorch', choices=['pytorch', 'flax', 'keras'], help="the GRU's init_scheme"
  )
  parser.add_argument('--seed', type=int, default=0, help='seed of the initial parameters')
  parser.add_argument('--ckpt-dir', default='checkpoints/classify_names')
  parser.add_argument('--ckpt-every', type=int, default=1000)
  parser.add_argument('--resume', action='store_true', help='continue from the newest checkpoint')
  parser.add_argument('--plot', default='confusion_names.png', help='where to write the confusion matrix')
  args = parser.parse_args()
  install_hint.require('matplotlib')  # for the plot at the end

  data = NamesData()
  languages, train_index, test_index, batch = data.languages, data.train_index, data.test_index, data.batch
  print(
    f'{len(data.names)} surnames in {len(languages)} languages ({len(train_index)} train, {len(test_index)} held out)'
  )
  model = NameClassifier(data.vocab, len(languages), args.hidden, args.init)
  params = model.init(jax.random.key(args.seed), *batch(train_index[:2])[:2])
  optimizer = optax.chain(
    optax.clip_by_global_norm(1.0), optax.adamw(optax.cosine_decay_schedule(args.lr, args.steps, 0.05))
  )
  train_step = make_train_step(functools.partial(loss_fn, model), optimizer)
  params, _, _ = fit(
    train_step,
    params,
    optimizer.init(params),
    lambda rng, step: (*batch(rng.choice(train_index, args.batch_size)), jax.random.key(step)),
    steps=args.steps,
    ckpt_dir=args.ckpt_dir,
    resume=args.resume,
    ckpt_every=args.ckpt_every,
    settings=vars(args),
  )
  predict = jax.jit(lambda params, chars, lengths: jnp.argmax(model.apply(params, chars, lengths), -1))

  chars, lengths, targets = batch(test_index)
  predictions = np.asarray(predict(params, chars, lengths))
  accuracy = (predictions == targets).mean()
  print(f'held-out accuracy: {accuracy:.3f} ({len(test_index)} names; chance {1 / len(languages):.3f})')
  for name in ('Schmidt', 'Rossi', 'Virtanen', 'Ó Súilleabháin', 'Dvořák', 'Jansen'):
    guess = predict(params, *data.encode(name))
    print(f'  {name:10s} -> {languages[int(guess[0])]}')
  save_confusion_matrix(
    targets, predictions, languages, args.plot, f'Surname language, held-out accuracy {accuracy:.1%}'
  )
  print(f'wrote {os.path.abspath(args.plot)}')


if __name__ == '__main__':
  main()
