"""Examples that make a claim a test can check."""

import os
import pathlib
import subprocess
import sys

import pytest

EXAMPLES = pathlib.Path(__file__).parent.parent / 'examples'


def test_sharded_training_matches_one_device():
  """8 fake CPU devices, batch split over them: the same losses as 1 device."""
  pytest.importorskip('faker')
  env = {**os.environ, 'XLA_FLAGS': '--xla_force_host_platform_device_count=8'}
  result = subprocess.run(
    [sys.executable, 'train_sharded.py', '--check', '--steps', '4'],
    cwd=EXAMPLES,
    env=env,
    capture_output=True,
    text=True,
  )
  assert result.returncode == 0, result.stdout + result.stderr
  assert 'same loss trajectory on 1 and 8 devices' in result.stdout
