"""Plumbing shared by the examples: checkpoints (orbax), progress bars, an optax train step."""

import logging
import os
import sys

import jax
import jax.numpy as jnp
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
