"""jaxrnn layers -> ONNX models of ``RNN`` / ``LSTM`` / ``GRU`` operators (one node per layer).

The graph is time-major inside, the layout of ONNX's recurrent operators: a
batch-major ``x: [B, T, F]`` is transposed on entry and ``outputs`` on exit.
Each layer is one node that runs both directions; the next layer reads its
``Y: [T, D, B, H]`` as ``[T, B, D*H]`` (forward half first, as in jaxrnn).
The ``layout=1`` attribute (batch-major, opset 14) is not used: onnxruntime's
CPU kernels refuse it.

Weights: jaxrnn stores ``w_ih: [F, G*H]``, ``w_hh: [H, G*H]``, ``b_ih``,
``b_hh: [G*H]`` with PyTorch's gate order; ONNX wants ``W: [D, G*H, F]``,
``R: [D, G*H, H]``, ``B: [D, 2*G*H]`` with its own order (LSTM ``i, o, f, c``
for jaxrnn's ``i, f, g, o``; GRU ``z, r, h`` for ``r, z, n``), so conversion is
a transpose and a permutation of the gate blocks.

Padding: ONNX's ``sequence_lens`` has jaxrnn's semantics under onnxruntime
(zeros at padded steps, the reverse direction starting at each sequence's last
valid step, ``Y_h`` the state after it) except at length 0: onnxruntime 1.32
returns a zero ``Y_h``/``Y_c`` there instead of the initial state (and older
versions refuse length 0). The graph therefore runs such rows with length 1,
then zeroes their outputs and restores their initial state (a ``Where``), so
every length in ``[0, T]`` matches jaxrnn (SPEC §3).

This file imports neither flax nor torch; onnx is imported when ``to_onnx`` is called.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from jaxrnn._src.config import checked_params
from jaxrnn._src.torch_cells import ElmanCell
from jaxrnn._src.torch_cells import GRUCell
from jaxrnn._src.torch_cells import LSTMCell

# Opsets accepted: Slice reads its bounds from inputs from opset 10 on.
MIN_OPSET = 10
DEFAULT_OPSET = 17
# jaxrnn's gate blocks in ONNX's order: LSTM i,f,g,o -> i,o,f,c; GRU r,z,n -> z,r,h.
_GATE_ORDER = {'lstm': (0, 3, 1, 2), 'gru': (1, 0, 2), 'rnn_tanh': (0,), 'rnn_relu': (0,)}
_OPERATOR = {'lstm': 'LSTM', 'gru': 'GRU', 'rnn_tanh': 'RNN', 'rnn_relu': 'RNN'}


def _import_onnx():
  try:
    return importlib.import_module('onnx')
  except ImportError as error:
    raise ImportError(
      "jaxrnn's ONNX export needs onnx: pip install 'jaxrnn[convert]' (onnx and onnxruntime)."
    ) from error


def _cell_of(layer):
  """Returns the one cell of ``layer``'s rows, or raises naming what ONNX has no operator for."""
  config = getattr(layer, 'config', None)
  if config is None:
    raise TypeError(
      'to_onnx needs a jaxrnn layer (RNN, LSTM, GRU or Recurrent over ElmanCell, LSTMCell or GRUCell), '
      f'got {type(layer).__name__}.'
    )
  if config.feature_ndim != 1:
    raise ValueError(
      f'to_onnx needs one feature axis (x: [B, T, F]); this layer has {config.feature_ndim} '
      '(ONNX recurrent operators take vectors).'
    )
  for cell in config.cells:
    if not isinstance(cell, (ElmanCell, LSTMCell, GRUCell)):
      raise TypeError(
        f'ONNX has no recurrent operator for {type(cell).__name__}: to_onnx exports ElmanCell (RNN), '
        'LSTMCell (LSTM) and GRUCell (GRU) layers.'
      )
  cell = config.cell
  if getattr(cell, 'proj_size', 0):
    raise ValueError(
      f'ONNX LSTM has no projection: to_onnx cannot export proj_size={cell.proj_size}; use proj_size=0.'
    )
  backward = config.backward_cell
  if backward is not None:

    def key(c):
      return (type(c), c.name, c.hidden_size, c.use_bias, getattr(c, 'reset_after', True))

    if key(backward) != key(cell):
      raise ValueError(
        'ONNX runs both directions of a layer in one node of one kind: to_onnx needs `backward_cell` '
        f'equal to `cell` in kind, hidden_size, use_bias and reset_after, got {backward!r} and {cell!r}.'
      )
  return config, cell


def _params_of(layer, variables, config) -> Mapping[str, Any]:
  if variables is None:  # an NNX layer holds its parameters: one callable per group
    if not all(callable(getattr(layer, group, None)) for group in config.param_names):
      raise TypeError('`variables` is needed for a linen layer: pass the `{"params": ...}` of layer.init.')
    return checked_params(config, {group: getattr(layer, group)() for group in config.param_names})
  return checked_params(config, variables)


def _float32(value, where: str) -> np.ndarray:
  """Returns ``value`` as float32: onnxruntime's CPU recurrent kernels run float32 only."""
  array = np.asarray(value)
  if not np.issubdtype(array.dtype, np.floating) and array.dtype.name != 'bfloat16':
    raise TypeError(f'`variables`: {where} must be floating-point, got {array.dtype}.')
  return array.astype(np.float32)


def _onnx_weights(cell, params: Mapping[str, Any], groups: list[str]) -> tuple[np.ndarray, ...]:
  """Returns ONNX's ``W: [D, G*H, F]``, ``R: [D, G*H, H]``, ``B: [D, 2*G*H]`` of one layer's groups."""
  order = _GATE_ORDER[cell.name]
  hidden = cell.hidden_size

  def permute(matrix):  # [rows, G*H] in jaxrnn's order -> [G*H, rows] in ONNX's order
    blocks = [matrix[..., g * hidden : (g + 1) * hidden] for g in order]
    return np.concatenate(blocks, axis=-1).T

  w, r, b = [], [], []
  for group in groups:
    weights = {name: _float32(value, f'params[{group!r}][{name!r}]') for name, value in params[group].items()}
    w.append(permute(weights['w_ih']))
    r.append(permute(weights['w_hh']))
    if cell.use_bias:
      b.append(np.concatenate([permute(weights['b_ih'][None])[:, 0], permute(weights['b_hh'][None])[:, 0]]))
  return np.stack(w), np.stack(r), (np.stack(b) if b else None)


def to_onnx(
  layer: Any,
  variables: Mapping[str, Any] | None = None,
  *,
  with_seq_lengths: bool = False,
  with_initial_carry: bool = False,
  opset: int = DEFAULT_OPSET,
  path: str | os.PathLike | None = None,
) -> Any:
  """Returns an ``onnx.ModelProto`` computing ``layer.apply(variables, x, ...)``.

  One ONNX ``RNN``, ``LSTM`` or ``GRU`` node per layer (both directions in one
  node). The model runs in float32 (onnxruntime's CPU recurrent kernels have
  no other dtype): float64 and bfloat16 parameters are cast. The batch and time
  dimensions are dynamic (``'batch'`` and ``'time'``); ``F`` is fixed.

  Graph inputs:

  - ``x``: float32 ``[B, T, F]`` (``[T, B, F]`` when ``layer.time_major``);
    one batch axis.
  - ``seq_lengths``: int32 ``[B]`` in ``[0, T]``, with ``with_seq_lengths``;
    it becomes ONNX's ``sequence_lens``, with jaxrnn's semantics (SPEC §3),
    length 0 included.
  - ``initial_h``: float32 ``[L*D, B, H]`` and, for LSTM, ``initial_c``, with
    ``with_initial_carry``; without, the carry starts at zeros.

  Graph outputs: ``outputs`` ``[B, T, D*H]`` (time-major ``[T, B, D*H]``),
  ``h_n`` ``[L*D, B, H]`` and, for LSTM, ``c_n`` ``[L*D, B, H]``: jaxrnn's
  ``(outputs, final_carry)``, row ``layer*D + direction``.

  Dropout (between layers and recurrent) is an inference no-op and is left
  out; the layer's compute ``dtype`` is not exported (float32 throughout).

  Args:
    layer: a [`jaxrnn.RNN`][jaxrnn.RNN], [`LSTM`][jaxrnn.LSTM],
      [`GRU`][jaxrnn.GRU] or [`Recurrent`][jaxrnn.Recurrent] over
      [`ElmanCell`][jaxrnn.ElmanCell], [`LSTMCell`][jaxrnn.LSTMCell] or
      [`GRUCell`][jaxrnn.GRUCell] (``reset_after`` True or False), linen or NNX.
    variables: ``{'params': ...}`` of a linen layer (or the ``params``
      themselves); ``None`` for an NNX layer, which holds its parameters.
    with_seq_lengths: add the ``seq_lengths`` input.
    with_initial_carry: add the ``initial_h`` (and ``initial_c``) inputs.
    opset: the ONNX opset, from 10 to the installed onnx's newest.
    path: if given, the model is also saved there (``onnx.save``).

  Returns:
    The model, checked with ``onnx.checker.check_model``.

  Raises:
    ImportError: onnx is not installed.
    TypeError: ``layer`` is not a jaxrnn layer, or runs a cell ONNX has no
      operator for (MGU, LayerNormLSTM, MinGRU, FlaxCell, your own cells), or
      a parameter is not floating-point.
    ValueError: ``proj_size`` (ONNX LSTM has no projection); a ``backward_cell``
      that differs from ``cell``; several feature axes; ``variables`` that do
      not fit the layer (naming the group, weight and shapes); ``opset`` out
      of range.

  Examples:
    >>> import jax, jax.numpy as jnp, jaxrnn
    >>> layer = jaxrnn.GRU(hidden_size=4, num_layers=2, bidirectional=True)
    >>> variables = layer.init(jax.random.key(0), jnp.ones((1, 5, 3)))
    >>> model = jaxrnn.interop.to_onnx(layer, variables, with_seq_lengths=True)
    >>> [node.op_type for node in model.graph.node if node.op_type == 'GRU']
    ['GRU', 'GRU']
    >>> [i.name for i in model.graph.input], [o.name for o in model.graph.output]
    (['x', 'seq_lengths'], ['outputs', 'h_n'])
  """

  onnx = _import_onnx()
  from onnx import TensorProto  # noqa: PLC0415
  from onnx import helper  # noqa: PLC0415
  from onnx import numpy_helper  # noqa: PLC0415

  newest = onnx.defs.onnx_opset_version()
  if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= newest:
    raise ValueError(
      f'`opset` must be an int in [{MIN_OPSET}, {newest}] (the installed onnx), got {opset!r}.'
    )
  config, cell = _cell_of(layer)
  params = _params_of(layer, variables, config)

  kind, lstm = cell.name, cell.name == 'lstm'
  num_dirs, hidden, num_layers = config.num_directions, cell.hidden_size, config.num_layers
  in_features = int(np.shape(params['l0']['w_ih'])[0])
  nodes, initializers = [], []

  def constant(name, value):  # an initializer, made once per name
    if name not in {tensor.name for tensor in initializers}:
      initializers.append(numpy_helper.from_array(np.asarray(value), name))
    return name

  def node(op, inputs, outputs, **attributes):
    nodes.append(helper.make_node(op, inputs, outputs, name=outputs[0], **attributes))
    return outputs[0]

  float_type = TensorProto.FLOAT
  if config.time_major:
    x_shape, out_shape = ['time', 'batch', in_features], ['time', 'batch', num_dirs * hidden]
  else:
    x_shape, out_shape = ['batch', 'time', in_features], ['batch', 'time', num_dirs * hidden]
  carry_shape = [num_layers * num_dirs, 'batch', hidden]
  inputs = [helper.make_tensor_value_info('x', float_type, x_shape)]
  outputs = [
    helper.make_tensor_value_info('outputs', float_type, out_shape),
    helper.make_tensor_value_info('h_n', float_type, carry_shape),
  ]
  if lstm:
    outputs.append(helper.make_tensor_value_info('c_n', float_type, carry_shape))
  if with_seq_lengths:
    inputs.append(helper.make_tensor_value_info('seq_lengths', TensorProto.INT32, ['batch']))
  if with_initial_carry:
    inputs.append(helper.make_tensor_value_info('initial_h', float_type, carry_shape))
    if lstm:
      inputs.append(helper.make_tensor_value_info('initial_c', float_type, carry_shape))

  features = 'x' if config.time_major else node('Transpose', ['x'], ['x_time_major'], perm=[1, 0, 2])
  lens = ''
  if with_seq_lengths:
    # onnxruntime loses the initial state at length 0 (older versions refuse it): run such rows
    # with length 1, then zero their outputs and restore their initial state (SPEC §3.3) with
    # `valid` below. Where, not Max: Max takes int32 from opset 12 only.
    valid = node('Greater', ['seq_lengths', constant('zero_int32', np.array(0, np.int32))], ['valid'])
    lens = node(
      'Where', [valid, 'seq_lengths', constant('one_int32', np.array(1, np.int32))], ['sequence_lens']
    )
    # [1, B, 1]: broadcasts against Y_h [D, B, H] and the outputs [T, B, D*H].
    valid = node('Reshape', [valid, constant('shape_1b1', np.array([1, -1, 1], np.int64))], ['valid_1b1'])
  zeros_carry = None
  final = {'h': [], 'c': []}
  for k in range(num_layers):
    groups = config.param_names[k * num_dirs : (k + 1) * num_dirs]
    w, r, b = _onnx_weights(cell, params, groups)
    node_inputs = [features, constant(f'W_l{k}', w), constant(f'R_l{k}', r)]
    node_inputs.append(constant(f'B_l{k}', b) if b is not None else '')
    node_inputs.append(lens)
    initial = {}
    for leaf in ('h', 'c') if lstm else ('h',):
      if with_initial_carry:
        starts = constant(f'rows_l{k}_start', np.array([k * num_dirs], np.int64))
        ends = constant(f'rows_l{k}_end', np.array([(k + 1) * num_dirs], np.int64))
        initial[leaf] = node('Slice', [f'initial_{leaf}', starts, ends], [f'initial_{leaf}_l{k}'])
      elif with_seq_lengths:
        if zeros_carry is None:  # [D, B, H] zeros, the B read off x
          shape = node('Shape', [features], ['x_shape'])
          batch = node(
            'Slice',
            [
              shape,
              constant('one_int64', np.array([1], np.int64)),
              constant('two_int64', np.array([2], np.int64)),
            ],
            ['batch_size'],
          )
          carry_dims = node(
            'Concat',
            [
              constant('num_dirs', np.array([num_dirs], np.int64)),
              batch,
              constant('hidden', np.array([hidden], np.int64)),
            ],
            ['carry_dims'],
            axis=0,
          )
          zeros_carry = node(
            'ConstantOfShape',
            [carry_dims],
            ['zeros_carry'],
            value=helper.make_tensor('zero', float_type, [1], [0.0]),
          )
        initial[leaf] = zeros_carry
    node_inputs.append(initial.get('h', ''))
    attributes = {'hidden_size': hidden, 'direction': 'bidirectional' if num_dirs == 2 else 'forward'}
    if lstm:
      node_inputs.append(initial.get('c', ''))
      node_outputs = [f'Y_l{k}', f'Y_h_l{k}', f'Y_c_l{k}']
    else:
      node_outputs = [f'Y_l{k}', f'Y_h_l{k}']
    if kind.startswith('rnn'):
      attributes['activations'] = [kind.removeprefix('rnn_').capitalize()] * num_dirs
    if kind == 'gru':
      attributes['linear_before_reset'] = int(cell.reset_after)
    while node_inputs and node_inputs[-1] == '':
      node_inputs.pop()
    node(_OPERATOR[kind], node_inputs, node_outputs, **attributes)
    # Y: [T, D, B, H] -> [T, B, D, H] -> [T, B, D*H], the next layer's input.
    transposed = node('Transpose', [f'Y_l{k}'], [f'Y_l{k}_tbdh'], perm=[0, 2, 1, 3])
    features = node(
      'Reshape', [transposed, constant('tb_flat', np.array([0, 0, -1], np.int64))], [f'Y_l{k}_flat']
    )
    for leaf, name in zip(('h', 'c'), node_outputs[1:], strict=False):
      if with_seq_lengths:
        name = node('Where', [valid, name, initial[leaf]], [f'{name}_valid'])
      final[leaf].append(name)
  if with_seq_lengths:
    features = node(
      'Where', [valid, features, constant('zero_float', np.array(0, np.float32))], ['outputs_time_major']
    )
  if config.time_major:
    node('Identity', [features], ['outputs'])
  else:
    node('Transpose', [features], ['outputs'], perm=[1, 0, 2])
  for leaf in ('h', 'c') if lstm else ('h',):
    node('Concat', final[leaf], [f'{leaf}_n'], axis=0)

  graph = helper.make_graph(nodes, type(layer).__name__, inputs, outputs, initializer=initializers)
  model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', opset)], producer_name='jaxrnn')
  onnx.checker.check_model(model, full_check=True)
  if path is not None:
    onnx.save(model, os.fspath(path))
  return model
