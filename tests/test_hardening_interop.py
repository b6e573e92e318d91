"""Issue #15, nothing silently wrong: interop copies and checks, decoding and padding helpers."""

import jax
import numpy as np
import pytest
from conftest import assert_trees_equal

from jaxrnn.interop import from_state_dict
from jaxrnn.interop import from_torch

torch = pytest.importorskip('torch')

F, H = 3, 4


# A1: converted variables own their memory.


def test_from_torch_variables_do_not_change_when_the_module_is_updated_in_place():
  torch.manual_seed(0)
  module = torch.nn.LSTM(F, H, num_layers=2, bidirectional=True, proj_size=2)
  _, variables = from_torch(module)
  before = jax.tree.map(np.array, variables)
  with torch.no_grad():
    for param in module.parameters():
      param.add_(1.0)
  assert_trees_equal(variables, before)


def test_from_state_dict_variables_do_not_change_when_the_arrays_are_updated_in_place():
  torch.manual_seed(1)
  state_dict = {k: v.numpy() for k, v in torch.nn.GRU(F, H, num_layers=2).state_dict().items()}
  _, variables = from_state_dict(state_dict, 'GRU')
  before = jax.tree.map(np.array, variables)
  for value in state_dict.values():
    value += 1.0
  assert_trees_equal(variables, before)
