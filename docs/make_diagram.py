"""Draws docs/images/outputs_and_carry.png: which cells make up `outputs` and `final_carry`.

python docs/make_diagram.py
"""

import pathlib

import matplotlib

matplotlib.use('Agg')
import matplotlib.patches as patches  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402

T, LENGTH = 6, 4
ROWS = [  # (label, layer, direction), drawn bottom to top
  ('layer 0, forward', 0, 0),
  ('layer 0, backward', 0, 1),
  ('layer 1, forward', 1, 0),
  ('layer 1, backward', 1, 1),
]


def main():
  fig, ax = plt.subplots(figsize=(11, 5.6))
  width, height, gap = 1.0, 0.62, 0.28
  for t in range(T):
    padded = t >= LENGTH
    ax.text(
      t * 1.3 + width / 2,
      -0.55,
      f'x[{t}]' + ('\n(padding)' if padded else ''),
      ha='center',
      va='top',
      fontsize=10,
      color='0.5' if padded else 'k',
    )
  for row, (label, layer, direction) in enumerate(ROWS):
    y = row * (height + gap)
    ax.text(-0.25, y + height / 2, label, ha='right', va='center', fontsize=10)
    for t in range(T):
      x = t * 1.3
      padded = t >= LENGTH
      last_layer = layer == 1
      face = '0.9' if padded else ('#9ecae1' if last_layer else '#f0f0f0')
      ax.add_patch(
        patches.FancyBboxPatch(
          (x, y),
          width,
          height,
          boxstyle='round,pad=0.02',
          facecolor=face,
          edgecolor='0.6',
          hatch='//' if padded else None,
        )
      )
      final = (not padded) and ((direction == 0 and t == LENGTH - 1) or (direction == 1 and t == 0))
      if final:
        ax.add_patch(
          patches.FancyBboxPatch(
            (x, y),
            width,
            height,
            boxstyle='round,pad=0.02',
            facecolor='none',
            edgecolor='#d62728',
            linewidth=3,
          )
        )
        ax.text(
          x + width / 2,
          y + height / 2,
          f'h_n[{layer * 2 + direction}]',
          ha='center',
          va='center',
          fontsize=9,
          color='#d62728',
          weight='bold',
        )
      elif padded:
        ax.text(x + width / 2, y + height / 2, '0', ha='center', va='center', fontsize=9, color='0.4')
      if t < T - 1 and not padded and t + 1 < LENGTH:
        start, end = (x + width, x + 1.3) if direction == 0 else (x + 1.3, x + width)
        ax.annotate(
          '',
          xy=(end, y + height / 2),
          xytext=(start, y + height / 2),
          arrowprops={'arrowstyle': '->', 'color': '0.3'},
        )
  top = len(ROWS) * (height + gap)
  ax.text(
    LENGTH * 1.3 / 2 - 0.15,
    top + 0.05,
    'outputs[b, t] = [layer 1 forward | layer 1 backward] at every step (blue); exact zeros at padding',
    ha='center',
    va='bottom',
    fontsize=10,
    color='#08519c',
  )
  ax.text(
    T * 1.3 + 0.1,
    1.5 * (height + gap),
    'final_carry (red):\nrow layer*D + direction,\nthe last valid step of\nevery layer and direction;\nbackward ends at t = 0',
    ha='left',
    va='center',
    fontsize=10,
    color='#d62728',
  )
  ax.set_xlim(-2.6, T * 1.3 + 2.6)
  ax.set_ylim(-1.3, top + 0.5)
  ax.axis('off')
  ax.set_title('2-layer bidirectional stack, one sequence of length 4 padded to T = 6', fontsize=12)
  out = pathlib.Path(__file__).parent / 'images' / 'outputs_and_carry.png'
  out.parent.mkdir(exist_ok=True)
  fig.savefig(out, dpi=110, bbox_inches='tight')
  print(f'wrote {out}')


if __name__ == '__main__':
  main()
