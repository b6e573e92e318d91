"""Draws docs/images/outputs_and_carry.svg: which steps make up `outputs` and `final_carry`.

MPLBACKEND=Agg python docs/make_diagram.py [--png PATH]

A 2-layer bidirectional LSTM reads one sequence of length 3 padded to T = 5. The
picture shows why layer 0's states are not in `outputs` (layer 0 feeds layer 1; only
layer 1 is returned at every step), where each row of `final_carry = (h_n, c_n)`
comes from, and that padded steps output exact zeros. `--png` also writes a PNG copy,
for looking at the result without an SVG viewer.
"""

import argparse
import pathlib

import matplotlib

matplotlib.use('Agg')
import matplotlib.patches as patches  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402

T, LENGTH = 5, 3
STEP = 1.55  # horizontal distance between time steps
WIDTH, HEIGHT = 1.2, 0.62  # one cell
ROW_GAP = 0.16  # between the two directions of a layer
LAYER_GAP = 0.95  # between layers, room for the arrows from layer to layer
FRAME = 0.1  # padding of the frame around a layer's two directions

BLUE, BLUE_DARK, RED, GREY = '#9ecae1', '#08519c', '#d62728', '0.45'
LAYER_FACE = ('#f4f4f4', BLUE)  # layer 0, layer 1 (the last: its outputs are `outputs`)


def cell_x(t):
  return t * STEP


def add_cell(ax, x, y, face, *, hatch=None, edge='0.6', linewidth=1.0):
  ax.add_patch(
    patches.FancyBboxPatch(
      (x, y),
      WIDTH,
      HEIGHT,
      boxstyle='round,pad=0.02',
      facecolor=face,
      edgecolor=edge,
      hatch=hatch,
      linewidth=linewidth,
    )
  )


def arrow(ax, start, end, color='0.3', style='-|>', linewidth=1.2):
  ax.annotate(
    '',
    xy=end,
    xytext=start,
    arrowprops={'arrowstyle': style, 'color': color, 'linewidth': linewidth, 'shrinkA': 0, 'shrinkB': 0},
  )


def draw_layer(ax, layer, bottom):
  """Draws both directions of one layer in a frame; returns the y of the frame's top edge."""
  top = bottom + 2 * HEIGHT + ROW_GAP
  ax.add_patch(
    patches.FancyBboxPatch(
      (-FRAME, bottom - FRAME),
      cell_x(T - 1) + WIDTH + 2 * FRAME,
      top - bottom + 2 * FRAME,
      boxstyle='round,pad=0.02',
      facecolor='none',
      edgecolor='0.55',
      linestyle='--',
      linewidth=1.0,
    )
  )
  for direction, name in enumerate(('forward', 'backward')):
    y = bottom + direction * (HEIGHT + ROW_GAP)
    row = layer * 2 + direction
    ax.text(-0.3, y + HEIGHT / 2, f'layer {layer}, {name}', ha='right', va='center', fontsize=12)
    for t in range(T):
      x = cell_x(t)
      if t >= LENGTH:  # padding: the state passes through unchanged, the output is 0
        add_cell(ax, x, y, '0.93', hatch='//')
        ax.text(x + WIDTH / 2, y + HEIGHT / 2, '0', ha='center', va='center', fontsize=12, color=GREY)
        continue
      last = t == (LENGTH - 1 if direction == 0 else 0)
      add_cell(ax, x, y, LAYER_FACE[layer], edge=RED if last else '0.6', linewidth=3 if last else 1)
      if last:
        ax.text(
          x + WIDTH / 2,
          y + HEIGHT / 2,
          f'h_n[{row}]\nc_n[{row}]',
          ha='center',
          va='center',
          fontsize=10.5,
          color=RED,
          weight='bold',
          linespacing=1.1,
        )
      if t + 1 < LENGTH:  # the recurrence: forward to the right, backward to the left
        left, right = x + WIDTH + 0.03, cell_x(t + 1) - 0.03
        start, end = (left, right) if direction == 0 else (right, left)
        arrow(ax, (start, y + HEIGHT / 2), (end, y + HEIGHT / 2))
  return top + FRAME


def draw():
  fig, ax = plt.subplots(figsize=(8.6, 8.2))
  # inputs
  for t in range(T):
    padded = t >= LENGTH
    ax.text(
      cell_x(t) + WIDTH / 2,
      -0.1,
      f'x[{t}]' + ('\npadding' if padded else ''),
      ha='center',
      va='top',
      fontsize=12,
      color=GREY if padded else 'k',
    )
  ax.text(-0.3, -0.1, 'inputs', ha='right', va='top', fontsize=12)

  # layers, with arrows from the inputs and from layer to layer at every valid step
  bottom, below = LAYER_GAP * 0.75, 0.0
  tops = []
  for layer in range(2):
    for t in range(LENGTH):  # x[t] (layer 0) or layer 0's [forward | backward] at t
      x = cell_x(t) + WIDTH / 2
      arrow(ax, (x, below + 0.03), (x, bottom - FRAME - 0.03), color='0.25', linewidth=1.6)
    top = draw_layer(ax, layer, bottom)
    tops.append(top)
    below, bottom = top, top + LAYER_GAP
  ax.text(
    cell_x(LENGTH) - 0.1,
    tops[0] + LAYER_GAP / 2,
    "layer 0's outputs [forward | backward]\nare layer 1's inputs, never in outputs",
    ha='left',
    va='center',
    fontsize=11,
    color='0.25',
  )

  # outputs: the last layer, both directions, every step
  y = tops[1] + LAYER_GAP
  ax.text(-0.3, y + HEIGHT / 2, 'outputs[b, t]', ha='right', va='center', fontsize=12, color=BLUE_DARK)
  for t in range(T):
    x = cell_x(t)
    if t < LENGTH:
      arrow(ax, (x + WIDTH / 2, tops[1] + 0.03), (x + WIDTH / 2, y - 0.05), color=BLUE_DARK, linewidth=1.6)
      add_cell(ax, x, y, BLUE, edge=BLUE_DARK)
      ax.text(
        x + WIDTH / 2, y + HEIGHT / 2, '[→ | ←]', ha='center', va='center', fontsize=11, color=BLUE_DARK
      )
    else:
      add_cell(ax, x, y, 'white', edge=BLUE_DARK)
      ax.text(x + WIDTH / 2, y + HEIGHT / 2, '0', ha='center', va='center', fontsize=13, color=BLUE_DARK)
  ax.text(
    cell_x(LENGTH) + WIDTH,
    y + HEIGHT + 0.12,
    'exact zeros at padding',
    ha='center',
    va='bottom',
    fontsize=11,
    color=BLUE_DARK,
  )
  ax.text(
    cell_x(0),
    y + HEIGHT + 0.12,
    'layer 1, forward half first',
    ha='left',
    va='bottom',
    fontsize=11,
    color=BLUE_DARK,
  )

  # what the red cells are
  ax.text(
    -3.0,
    -1.05,
    "final_carry (red) = LSTMState(h, c), unpacked as PyTorch's (h_n, c_n):\n"
    'row layer*D + direction holds the state after the last valid step of\n'
    'every layer and direction; the backward direction ends at t = 0.',
    ha='left',
    va='top',
    fontsize=11.5,
    color=RED,
  )
  ax.set_xlim(-3.0, cell_x(T - 1) + WIDTH + 0.2)
  ax.set_ylim(-2.05, y + HEIGHT + 0.6)
  ax.set_aspect('equal')
  ax.axis('off')
  ax.set_title(f'2-layer bidirectional LSTM, one sequence of length {LENGTH} padded to T = {T}', fontsize=13)
  return fig


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--png', type=pathlib.Path, help='also write a PNG copy here (for viewing)')
  args = parser.parse_args()
  plt.rcParams['svg.hashsalt'] = 'jaxrnn'  # stable ids: rerunning changes no bytes
  fig = draw()
  out = pathlib.Path(__file__).parent / 'images' / 'outputs_and_carry.svg'
  out.parent.mkdir(exist_ok=True)
  fig.savefig(out, format='svg', bbox_inches='tight', metadata={'Date': None})
  print(f'wrote {out}')
  if args.png:
    fig.savefig(args.png, dpi=110, bbox_inches='tight')
    print(f'wrote {args.png}')


if __name__ == '__main__':
  main()
