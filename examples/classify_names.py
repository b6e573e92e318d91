"""Which language does a surname come from? A character-level bidirectional GRU.

Real surname lists by locale ship inside the `faker` package (no download). Names
have different lengths: batches are padded with `jaxrnn.pad_sequences` and the
layer reads `seq_lengths`, so no padding ever reaches the model. Reports the
held-out accuracy and writes a confusion-matrix plot.

With `--pack`, training batches are packed instead (`jaxrnn.pack_sequences`,
SPEC §11): several names share a row, the layer reads `segment_ids`, and each
name is classified from its own final state. A packed step trains on the same
`--batch-size` names as a padded step (the same names, for the same seed), in
fewer rows (`--pack-rows`), so the two runs differ in batching only: compare the
`padded:` and `packed:` lines (training sequences/s, held-out accuracy) of a run
without and with `--pack`.

    python examples/classify_names.py                  # about 2 minutes on a 2-core CPU
    python examples/classify_names.py --pack           # the same, packed
    python examples/classify_names.py --steps 20       # smoke run
    python examples/classify_names.py --resume         # continue from the last checkpoint
"""

import argparse
import functools
import importlib
import math
import os
import time

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
  def __call__(
    self, chars, lengths=None, *, segment_ids=None, num_segments=None, positions=None, deterministic=True
  ):
    """Returns the logits ``[B, classes]`` of padded ``chars [B, T]`` (``lengths [B]``), or, packed,
    the logits ``[N, classes]`` of the ``N`` names at ``positions [N, 2]`` (row, id) of ``chars [R, T]``
    (``segment_ids [R, T]``, at most ``num_segments`` names a row), in the order of ``positions``."""
    x = nn.Embed(self.vocab, 32)(chars)  # [B, T, 32]
    gru = jaxrnn.GRU(self.hidden, num_layers=2, bidirectional=True, dropout=0.2, init_scheme=self.init_scheme)
    if segment_ids is None:
      _, h_n = gru(x, lengths, deterministic=deterministic)  # [L*D, B, H]
    else:
      _, h_n = gru(x, segment_ids=segment_ids, num_segments=num_segments, deterministic=deterministic)
      h_n = h_n[:, positions[:, 0], positions[:, 1] - 1]  # [L*D, R, S, H] -> each name's own: [L*D, N, H]
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

  def packed_batch(self, index, num_rows=None, max_segments=None):
    """Returns ``(chars [R, T], segment_ids [R, T], positions [N, 2], labels [N])`` for the names at ``index``.

    The names are packed into rows of the padded length ``T``; ``positions`` holds each name's
    (row, id), in the order of ``index`` like ``labels``. ``num_rows`` is at least ``R``: a batch
    that needs more rows gets them (and the jitted step compiles for that shape).
    """
    chars, segment_ids, positions = jaxrnn.pack_sequences(
      [self.encoded[i] for i in index], self.max_len, max_segments=max_segments, return_positions=True
    )
    extra = ((0, max(0, (num_rows or 0) - len(chars))), (0, 0))  # fixed shapes for jit: padding rows
    return np.pad(chars, extra), np.pad(segment_ids, extra), positions, self.labels[index]

  def encode(self, name):
    return jaxrnn.pad_sequences([[self.char_index.get(c, 0) for c in name]], max(self.max_len, len(name)))


def loss_fn(model, params, chars, lengths, targets, key):
  logits = model.apply(params, chars, lengths, deterministic=False, rngs={'dropout': key})
  return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()


def packed_loss_fn(model, num_segments, params, chars, segment_ids, positions, targets, key):
  logits = model.apply(
    params,
    chars,
    segment_ids=segment_ids,
    num_segments=num_segments,
    positions=positions,
    deterministic=False,
    rngs={'dropout': key},
  )
  return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()


def packed_predictions(model, params, data, index, max_segments):
  """Returns the predicted labels of the names at ``index``, packed (rows as many as they need)."""
  chars, segment_ids, positions, _ = data.packed_batch(index, max_segments=max_segments)
  predict = jax.jit(functools.partial(model.apply, num_segments=max_segments))
  logits = predict(params, chars, segment_ids=segment_ids, positions=positions)
  return np.asarray(jnp.argmax(logits, -1))


def default_pack_rows(data, batch_size):
  """Rows that hold ``batch_size`` random training names with a margin: the mean fill, plus 20% and a row."""
  mean_length = np.mean([len(data.encoded[i]) for i in data.train_index])
  return math.ceil(1.2 * batch_size * mean_length / data.max_len) + 1


class TrainingMeter:
  """Training throughput: seconds spent making batches and in (finished) training steps, the first
  step (which compiles) left out, and the share of the batches' steps that are padding."""

  def __init__(self, train_step, next_batch, sequences_per_step):
    self.sequences_per_step = sequences_per_step
    self.seconds, self.steps, self.padding, self.slots = 0.0, 0, 0, 0
    self.batch_seconds = 0.0

    def timed_batch(rng, step):
      started = time.perf_counter()
      batch, valid = next_batch(rng, step)  # valid: [rows, T], True on the steps of a name
      self.padding += int(valid.size - valid.sum())
      self.slots += int(valid.size)
      self.batch_seconds = time.perf_counter() - started
      return batch

    def timed_step(params, opt_state, *batch):
      started = time.perf_counter()
      result = jax.block_until_ready(train_step(params, opt_state, *batch))
      if self.steps:  # the first step compiles
        self.seconds += self.batch_seconds + time.perf_counter() - started
      self.steps += 1
      return result

    self.next_batch, self.train_step = timed_batch, timed_step

  def report(self, name, accuracy):
    """``'packed: 1234 sequences/s (padding 5% of steps), held-out accuracy 0.720'``."""
    if self.steps > 1:
      speed = f'{(self.steps - 1) * self.sequences_per_step / self.seconds:.0f} sequences/s'
      speed += f' (padding {self.padding / self.slots:.0%} of steps)'
    else:
      speed = 'no training speed (fewer than 2 steps trained)'
    return f'{name}: {speed}, held-out accuracy {accuracy:.3f}'


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
  parser.add_argument(
    '--pack',
    action='store_true',
    help='train on packed rows (segment_ids): each step trains on the same --batch-size names as '
    'without --pack (the same names for the same seed), packed into --pack-rows rows of the padded '
    'length; compare the final "packed:" line (sequences/s, held-out accuracy) with the "padded:" '
    'line of the same run without --pack',
  )
  parser.add_argument(
    '--pack-rows',
    type=int,
    default=None,
    help='with --pack, rows per training batch (fixed, so the step compiles once; a rare batch '
    'that needs more gets them, and one more compile); default: the mean fill plus 20%% and a row',
  )
  parser.add_argument(
    '--max-segments', type=int, default=12, help='with --pack, the most names in one row (num_segments)'
  )
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
  if args.pack:
    pack_rows = args.pack_rows or default_pack_rows(data, args.batch_size)
    print(
      f'packing: {args.batch_size} names a step in {pack_rows} rows of {data.max_len} (at most {args.max_segments} a row)'
    )
    train_step = make_train_step(functools.partial(packed_loss_fn, model, args.max_segments), optimizer)

    def next_batch(rng, step):
      chars, segment_ids, positions, targets = data.packed_batch(
        rng.choice(train_index, args.batch_size), pack_rows, args.max_segments
      )
      return (chars, segment_ids, positions, targets, jax.random.key(step)), segment_ids > 0

  else:
    train_step = make_train_step(functools.partial(loss_fn, model), optimizer)

    def next_batch(rng, step):
      chars, lengths, targets = batch(rng.choice(train_index, args.batch_size))
      return (chars, lengths, targets, jax.random.key(step)), np.arange(chars.shape[1]) < lengths[:, None]

  meter = TrainingMeter(train_step, next_batch, args.batch_size)
  settings = vars(args)
  if not args.pack:  # the packing flags are no setting of a padded run (which resumes runs from before them)
    settings = {
      name: value for name, value in settings.items() if name not in ('pack', 'pack_rows', 'max_segments')
    }
  params, _, _ = fit(
    meter.train_step,
    params,
    optimizer.init(params),
    meter.next_batch,
    steps=args.steps,
    ckpt_dir=args.ckpt_dir,
    resume=args.resume,
    ckpt_every=args.ckpt_every,
    settings=settings,
  )
  predict = jax.jit(lambda params, chars, lengths: jnp.argmax(model.apply(params, chars, lengths), -1))

  chars, lengths, targets = batch(test_index)
  predictions = np.asarray(predict(params, chars, lengths))
  accuracy = (predictions == targets).mean()
  print(f'held-out accuracy: {accuracy:.3f} ({len(test_index)} names; chance {1 / len(languages):.3f})')
  if args.pack:  # the same model packed: the same predictions
    packed = packed_predictions(model, params, data, test_index, args.max_segments)
    differ = int((packed != predictions).sum())
    print(
      f'packed evaluation: the same predictions on all {len(test_index)} held-out names'
      if not differ
      else f'packed evaluation: {differ} of {len(test_index)} held-out predictions differ from padded'
    )
  for name in ('Schmidt', 'Rossi', 'Virtanen', 'Ó Súilleabháin', 'Dvořák', 'Jansen'):
    guess = predict(params, *data.encode(name))
    print(f'  {name:10s} -> {languages[int(guess[0])]}')
  save_confusion_matrix(
    targets, predictions, languages, args.plot, f'Surname language, held-out accuracy {accuracy:.1%}'
  )
  print(f'wrote {os.path.abspath(args.plot)}')
  other = 'without --pack' if args.pack else 'with --pack'
  print(f'{meter.report("packed" if args.pack else "padded", accuracy)}; to compare, run {other}')


if __name__ == '__main__':
  main()
