"""Plumbing shared by the examples: checkpoints (orbax), progress, an optax train step."""

import json
import logging
import os
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from tqdm.auto import tqdm

# Orbax logs every save at INFO; keep the examples' output readable.
logging.getLogger('absl').setLevel(logging.WARNING)


# Flags that say how long to run, how (`scan_mode`: same results) and what to write, not what is
# trained: a resumed run may change them. Any other flag of a script is part of the run's settings, recorded with its checkpoints.
RUN_FLAGS = frozenset(
  {'steps', 'resume', 'ckpt_dir', 'ckpt_every', 'plot', 'gen_len', 'temperature', 'check', 'scan_mode'}
)


def array_shapes(tree):
  """Returns ``{path: 'shape dtype'}`` of every array in ``tree``."""
  return {
    jax.tree_util.keystr(path): f'{tuple(np.shape(leaf))} {getattr(leaf, "dtype", type(leaf).__name__)}'
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]
  }


def as_flag(name, value):
  return f'--{name.replace("_", "-")} {value}'


class Checkpoints:
  """Orbax checkpoints of one training run in a directory, with a record of the run that wrote them.

  The record (`RECORD`, next to the step folders) holds the script, its settings (its flags except
  `RUN_FLAGS`) and the shape of every array of the state. A resume with other settings is then
  refused with the flags that differ, not met by orbax's shape error; and a new run refuses a
  directory that holds an earlier run's steps, which orbax would silently not overwrite.
  """

  RECORD = 'run.json'

  def __init__(self, directory, settings, template, max_to_keep=2):
    self.directory = pathlib.Path(directory).absolute()
    self.record = {
      'script': pathlib.Path(sys.argv[0]).name,
      'settings': {name: value for name, value in sorted(settings.items()) if name not in RUN_FLAGS},
      'arrays': array_shapes(template),
    }
    self.manager = ocp.CheckpointManager(
      self.directory, options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep)
    )

  def start(self, resume, template):
    """Returns ``(step, state)`` to train on from: the newest checkpoint's if ``resume``, else ``(0, template)``.

    Exits with a message that says what to do if the directory holds steps of another run.
    """
    print(f'checkpoints: {self.directory}')
    steps = self.manager.all_steps()
    if not steps:
      if resume:
        print(f'no checkpoint to resume in {self.directory}: training from step 0')
      self.write_record()
      return 0, template
    listed = ('step ' if len(steps) == 1 else 'steps ') + ', '.join(str(step) for step in sorted(steps))
    if not resume:
      self.refuse(
        f'{self.directory} already holds checkpoints ({listed}) of an earlier run. Pass --resume '
        f'to continue that run, or --ckpt-dir to start a new one in another directory (or delete this one).'
      )
    step = self.manager.latest_step()
    recorded = self.read_record()
    if recorded is not None:
      self.check_same_run(recorded)
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template)
    try:
      state = self.manager.restore(step, args=ocp.args.StandardRestore(abstract))
    except ValueError as error:  # a directory from before the record: orbax names one array
      self.refuse(
        f'the checkpoint of step {step} in {self.directory} does not fit this model: it was written with '
        f'other settings ({str(error).splitlines()[0]}). Resume with the settings that wrote it, or '
        f'start a new run with another --ckpt-dir.'
      )
    if recorded is None:
      self.write_record()
    print(f'resumed from step {step}')
    return step, state

  def check_same_run(self, recorded):
    """Exits naming what differs if ``recorded`` is not this run's script, settings and arrays."""
    advice = 'Resume with the settings that wrote them, or start a new run with another --ckpt-dir.'
    if recorded['script'] != self.record['script']:
      self.refuse(
        f'{self.directory} holds checkpoints of {recorded["script"]}, not of {self.record["script"]}. '
        f'Start a new run with another --ckpt-dir.'
      )
    then, now = recorded['settings'], self.record['settings']
    differ = [name for name in sorted({*then, *now}) if then.get(name) != now.get(name)]
    if differ:
      self.refuse(
        f'the checkpoints in {self.directory} were written with '
        + ', '.join(as_flag(name, then.get(name, '(none)')) for name in differ)
        + '; this run has '
        + ', '.join(as_flag(name, now.get(name, '(none)')) for name in differ)
        + f'. {advice}'
      )
    then, now = recorded['arrays'], self.record['arrays']
    differ = [path for path in sorted({*then, *now}) if then.get(path) != now.get(path)]
    if differ:
      shown = '; '.join(
        f'{path} is {then.get(path, "absent")} there, {now.get(path, "absent")} here' for path in differ[:3]
      )
      more = f' (and {len(differ) - 3} more)' if len(differ) > 3 else ''
      self.refuse(f'the checkpoints in {self.directory} do not fit this model: {shown}{more}. {advice}')

  def read_record(self):
    path = self.directory / self.RECORD
    return json.loads(path.read_text()) if path.exists() else None

  def write_record(self):
    (self.directory / self.RECORD).write_text(json.dumps(self.record, indent=1, default=str) + '\n')

  def refuse(self, message):
    self.close()
    raise SystemExit(f'error: {message}')

  def save(self, step, state):
    self.manager.save(step, args=ocp.args.StandardSave(state))
    self.manager.wait_until_finished()

  def close(self):
    self.manager.close()


class ProgressBar:
  """A tqdm bar with the running loss, for a terminal."""

  def __init__(self, total, initial, desc):
    self.bar = tqdm(total=total, initial=initial, desc=desc, mininterval=0.5, ncols=90)

  def update(self, step, loss):
    self.bar.update()
    if step % 10 == 0 or step == self.bar.total:
      self.bar.set_postfix(loss=f'{float(loss):.4f}', refresh=False)  # the next redraw shows it

  def close(self):
    self.bar.close()


class ProgressLines:
  """A plain line at every tenth of the steps, for a log (CI, a pipe), where a bar's redraws pile up."""

  def __init__(self, total, initial, desc):
    self.total, self.initial, self.desc = total, initial, desc
    self.tenths_shown = 0
    self.started = time.perf_counter()

  def update(self, step, loss):
    tenths = 10 * (step - self.initial) // (self.total - self.initial)
    if tenths > self.tenths_shown:
      self.tenths_shown = tenths
      seconds = time.perf_counter() - self.started
      print(
        f'{self.desc}: step {step}/{self.total} ({100 * step // self.total}%), loss {float(loss):.4f}, {seconds:.0f} s',
        flush=True,
      )

  def close(self):
    pass


def progress(total, initial=0, desc='train'):
  """Returns a `ProgressBar` on a terminal, else (CI set, or stderr a file or pipe) `ProgressLines`."""
  in_ci = os.environ.get('CI', '').lower() not in ('', '0', 'false')
  on_terminal = sys.stderr.isatty() and not in_ci
  return (ProgressBar if on_terminal else ProgressLines)(total, initial, desc)


def fit(
  train_step,
  params,
  opt_state,
  next_batch,
  *,
  steps,
  ckpt_dir=None,
  resume=False,
  ckpt_every=0,
  settings=None,
  desc='train',
):
  """Trains up to ``steps`` and returns ``(params, opt_state, losses)``.

  ``next_batch(rng, step)`` returns the arguments after ``(params, opt_state)`` of
  ``train_step``. Saves to ``ckpt_dir`` (if set) every ``ckpt_every`` steps (if set) and at the
  end, recording ``settings`` (a script's ``vars(args)``) with the checkpoints; with ``resume`` it
  starts from the newest checkpoint there, after checking it was written with the same settings.
  Shows progress with the running loss, unless ``desc`` is None.
  """
  state = {'params': params, 'opt_state': opt_state}
  checkpoints = Checkpoints(ckpt_dir, settings or {}, state) if ckpt_dir else None
  start = 0
  if checkpoints:
    start, state = checkpoints.start(resume, state)
  params, opt_state = state['params'], state['opt_state']
  losses = []
  if start and start >= steps:
    print(
      f'the checkpoint already reached step {start} (--steps {steps}): nothing to train; '
      f'pass a larger --steps to train on'
    )
  elif start < steps:
    rng = np.random.default_rng(start)  # a resumed run draws fresh batches
    shown = progress(steps, initial=start, desc=desc) if desc else None
    started = time.perf_counter()
    for step in range(start + 1, steps + 1):
      params, opt_state, loss = train_step(params, opt_state, *next_batch(rng, step))
      losses.append(loss)
      if shown:
        shown.update(step, loss)
      if checkpoints and ((ckpt_every and step % ckpt_every == 0) or step == steps):
        checkpoints.save(step, {'params': params, 'opt_state': opt_state})
    if shown:
      shown.close()
    if desc:
      print(f'trained steps {start + 1}..{steps} in {time.perf_counter() - started:.0f} s')
  if checkpoints:
    checkpoints.close()
  return params, opt_state, [float(x) for x in losses]


def make_train_step(loss_fn, optimizer):
  """Returns a jitted ``(params, opt_state, *batch) -> (params, opt_state, loss)`` for ``loss_fn(params, *batch)``."""

  @jax.jit
  def train_step(params, opt_state, *batch):
    loss, grads = jax.value_and_grad(loss_fn)(params, *batch)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  return train_step


def masked_mean(values, mask):
  mask = mask.astype(values.dtype)
  return jnp.sum(values * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def save_confusion_matrix(targets, predictions, labels, path, title):
  """Writes a row-normalised confusion matrix (rows: truth) as a PNG."""
  import matplotlib

  matplotlib.use('Agg')
  import matplotlib.pyplot as plt

  counts = np.zeros((len(labels), len(labels)))
  np.add.at(counts, (targets, predictions), 1)
  rates = counts / np.maximum(counts.sum(1, keepdims=True), 1)
  fig, ax = plt.subplots(figsize=(7, 6))
  image = ax.imshow(rates, cmap='Blues', vmin=0, vmax=1)
  ax.set_xticks(range(len(labels)), labels, rotation=45, ha='right')
  ax.set_yticks(range(len(labels)), labels)
  ax.set_xlabel('predicted')
  ax.set_ylabel('true')
  for i in range(len(labels)):
    for j in range(len(labels)):
      if counts[i, j]:
        ax.text(
          j,
          i,
          int(counts[i, j]),
          ha='center',
          va='center',
          fontsize=8,
          color='white' if rates[i, j] > 0.5 else 'black',
        )
  fig.colorbar(image, ax=ax, fraction=0.046)
  ax.set_title(title)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
