"""The surname classifier trained data-parallel across devices with `jax.sharding`.

A `Mesh` over the devices; each batch is split along the batch axis ('data'),
parameters and optimizer state are replicated; `jax.jit` inserts the gradient
all-reduce. On a CPU, fake several devices:

    XLA_FLAGS=--xla_force_host_platform_device_count=8 python examples/train_sharded.py
    XLA_FLAGS=--xla_force_host_platform_device_count=8 python examples/train_sharded.py --check --steps 5

`--check` trains the same steps on 1 device and on all devices and fails unless the
loss trajectories agree (to float tolerance).
"""

import argparse
import functools
import time

import install_hint

try:  # the `examples` extra's packages; if one is missing, say how to install it
  import jax
  import numpy as np
  import optax
  from classify_names import NameClassifier
  from classify_names import NamesData
  from classify_names import loss_fn
  from common import fit
  from common import make_train_step
  from jax.sharding import NamedSharding
  from jax.sharding import PartitionSpec as P
except ModuleNotFoundError as error:
  install_hint.exit_if_optional(error)


def train(
  data, num_devices, steps, batch_size, ckpt_dir=None, resume=False, settings=None, show_progress=True
):
  """Returns the loss of every step and the held-out accuracy, training on the first ``num_devices`` devices."""
  mesh = jax.make_mesh(
    (num_devices,), ('data',), devices=jax.devices()[:num_devices], axis_types=(jax.sharding.AxisType.Auto,)
  )
  replicated, by_batch = NamedSharding(mesh, P()), NamedSharding(mesh, P('data'))
  model = NameClassifier(data.vocab, len(data.languages))
  params = model.init(jax.random.key(0), *data.batch(data.train_index[:2])[:2])
  optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(3e-3))
  params, opt_state = jax.device_put((params, optimizer.init(params)), replicated)
  train_step = make_train_step(functools.partial(loss_fn, model), optimizer)

  def next_batch(rng, step):
    chars, lengths, targets = jax.device_put(data.batch(rng.choice(data.train_index, batch_size)), by_batch)
    return chars, lengths, targets, jax.random.key(step)

  params, _, losses = fit(
    train_step,
    params,
    opt_state,
    next_batch,
    steps=steps,
    ckpt_dir=ckpt_dir,
    resume=resume,
    settings=settings,
    desc=f'{num_devices} device(s)' if show_progress else None,
  )
  assert params['params']['GRU_0']['l0']['w_ih'].sharding.is_fully_replicated
  predict = jax.jit(lambda params, chars, lengths: model.apply(params, chars, lengths).argmax(-1))
  chars, lengths, targets = data.batch(data.test_index)
  accuracy = float((np.asarray(predict(params, chars, lengths)) == targets).mean())
  return losses, accuracy


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--steps', type=int, default=1200)
  parser.add_argument('--batch-size', type=int, default=64, help='global batch, split over the devices')
  parser.add_argument('--ckpt-dir', default='checkpoints/train_sharded')
  parser.add_argument('--resume', action='store_true', help='continue from the newest checkpoint')
  parser.add_argument('--check', action='store_true', help='compare with 1-device training and exit')
  args = parser.parse_args()
  devices = jax.device_count()
  if args.batch_size % devices:
    parser.error(f'--batch-size {args.batch_size} must be a multiple of the {devices} devices')
  data = NamesData()
  print(f'{devices} devices: {jax.devices()}')
  if args.check:
    one, _ = train(data, 1, args.steps, args.batch_size, show_progress=False)
    many, _ = train(data, devices, args.steps, args.batch_size, show_progress=False)
    print('1 device :', ' '.join(f'{x:.5f}' for x in one))
    print(f'{devices} devices:', ' '.join(f'{x:.5f}' for x in many))
    np.testing.assert_allclose(many, one, rtol=1e-4, atol=1e-5)
    print(f'same loss trajectory on 1 and {devices} devices')
    return
  started = time.perf_counter()
  losses, accuracy = train(data, devices, args.steps, args.batch_size, args.ckpt_dir, args.resume, vars(args))
  print(f'trained in {time.perf_counter() - started:.0f} s; held-out accuracy {accuracy:.3f}')


if __name__ == '__main__':
  main()
