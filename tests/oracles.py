"""Independent float64 NumPy references: cells, and a per-sequence Python loop for layers.

The layer oracle runs each sequence on its own, over its valid steps only
(forward ``0..len-1``, backward ``len-1..0``), so it shares no masking or
reversal logic with the library.
"""

import numpy as np


def sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x))


def np_cell(cell, p, carry, x):
  """One step of ``cell`` on unbatched float64 arrays; returns (new_carry, y)."""
  f64 = lambda a: None if a is None else np.asarray(a, np.float64)  # noqa: E731
  w_ih, w_hh, b_ih, b_hh, w_hr = (f64(p.get(k)) for k in ('w_ih', 'w_hh', 'b_ih', 'b_hh', 'w_hr'))
  x = np.asarray(x, np.float64)
  gx = x @ w_ih + (0 if b_ih is None else b_ih)
  if cell == 'lstm':
    h, c = (np.asarray(a, np.float64) for a in carry)
    z = gx + h @ w_hh + (0 if b_hh is None else b_hh)
    H = z.shape[-1] // 4
    i, f, g, o = z[:H], z[H : 2 * H], z[2 * H : 3 * H], z[3 * H :]
    c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
    h = sigmoid(o) * np.tanh(c)
    if w_hr is not None:
      h = h @ w_hr
    return (h, c), h
  h = np.asarray(carry, np.float64)
  gh = h @ w_hh + (0 if b_hh is None else b_hh)
  if cell in ('gru', 'gru_reset_before'):
    H = gh.shape[-1] // 3
    r = sigmoid(gx[:H] + gh[:H])
    z = sigmoid(gx[H : 2 * H] + gh[H : 2 * H])
    if cell == 'gru':
      n = np.tanh(gx[2 * H :] + r * gh[2 * H :])
    else:  # Keras' reset_after=False: the reset multiplies h before its matmul
      n = np.tanh(gx[2 * H :] + (r * h) @ w_hh[:, 2 * H :] + (0 if b_hh is None else b_hh[2 * H :]))
    h = (1 - z) * n + z * h
    return h, h
  pre = gx + gh
  h = np.tanh(pre) if cell == 'rnn_tanh' else np.maximum(pre, 0.0)
  return h, h


def np_layer(config, params, x, lengths, carry0):
  """Returns (outputs [B, T, D*H_out], final carry rows) for batch-major x [B, T, F].

  ``carry0``: for LSTM a pair (h [L*D, B, H_out], c [L*D, B, H]); else h.
  """
  x = np.asarray(x, np.float64)
  B, T, _ = x.shape
  L, D, Hout = config.num_layers, config.num_directions, config.output_size
  lstm = config.cell.name == 'lstm'
  name = config.cell.name if getattr(config.cell, 'reset_after', True) else 'gru_reset_before'
  lengths = np.full(B, T) if lengths is None else np.asarray(lengths)
  outputs = np.zeros((B, T, D * Hout))
  final_h = np.zeros((L * D, B, Hout))
  final_c = np.zeros((L * D, B, config.hidden_size))
  for b in range(B):
    seq = x[b, : lengths[b]]
    for layer in range(L):
      outs = []
      for d in range(D):
        row = layer * D + d
        carry = (carry0[0][row, b], carry0[1][row, b]) if lstm else carry0[row, b]
        ys = np.zeros((len(seq), Hout))
        order = range(len(seq)) if d == 0 else reversed(range(len(seq)))
        for t in order:
          carry, ys[t] = np_cell(name, params[config.param_names[row]], carry, seq[t])
        if lstm:
          final_h[row, b], final_c[row, b] = carry
        else:
          final_h[row, b] = carry
        outs.append(ys)
      seq = np.concatenate(outs, axis=-1)
    outputs[b, : lengths[b]] = seq
  return outputs, ((final_h, final_c) if lstm else final_h)
