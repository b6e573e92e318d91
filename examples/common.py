"""Plumbing shared by the examples: checkpoints (orbax), progress bars, an optax train step."""

import logging
import os
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


class Checkpoints:
  """Saves and restores a training-state pytree with orbax, keeping the last few steps."""

  def __init__(self, directory, max_to_keep=2):
    self.manager = ocp.CheckpointManager(
      os.path.abspath(directory), options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep)
    )

  def save(self, step, state):
    self.manager.save(step, args=ocp.args.StandardSave(state))
    self.manager.wait_until_finished()

  def restore_latest(self, template):
    """Returns ``(step, state)`` of the newest checkpoint, or ``(0, template)`` if there is none."""
    step = self.manager.latest_step()
    if step is None:
      return 0, template
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template)
    return step, self.manager.restore(step, args=ocp.args.StandardRestore(abstract))

  def close(self):
    self.manager.close()


def progress(total, initial=0, desc='train'):
  """A tqdm bar; quiet refresh rate when not on a terminal (CI logs)."""
  return tqdm(
    total=total, initial=initial, desc=desc, mininterval=0.5 if sys.stderr.isatty() else 30, ncols=90
  )


def fit(
  train_step, params, opt_state, next_batch, *, steps, ckpt_dir=None, resume=False, ckpt_every=0, desc='train'
):
  """Trains up to ``steps`` and returns ``(params, opt_state, losses)``.

  ``next_batch(rng, step)`` returns the arguments after ``(params, opt_state)`` of
  ``train_step``. With ``resume`` it starts from the newest checkpoint in ``ckpt_dir``;
  it saves every ``ckpt_every`` steps (if set) and at the end. Shows a progress bar
  with the running loss, unless ``desc`` is None.
  """
  checkpoints = Checkpoints(ckpt_dir) if ckpt_dir else None
  start = 0
  if resume and checkpoints:
    start, state = checkpoints.restore_latest({'params': params, 'opt_state': opt_state})
    params, opt_state = state['params'], state['opt_state']
    print(f'resumed from step {start}')
  rng = np.random.default_rng(start)  # a resumed run draws fresh batches
  bar = progress(steps, initial=start, desc=desc) if desc else None
  losses = []
  started = time.perf_counter()
  for step in range(start + 1, steps + 1):
    params, opt_state, loss = train_step(params, opt_state, *next_batch(rng, step))
    losses.append(loss)
    if bar:
      bar.update()
      if step % 10 == 0 or step == steps:
        bar.set_postfix(loss=f'{float(loss):.4f}')
    if checkpoints and ((ckpt_every and step % ckpt_every == 0) or step == steps):
      checkpoints.save(step, {'params': params, 'opt_state': opt_state})
  if bar:
    bar.close()
  if checkpoints:
    checkpoints.close()
  if desc:
    print(f'trained steps {start + 1}..{steps} in {time.perf_counter() - started:.0f} s')
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
