"""The ablation's report: a markdown table and a bar chart per task.

Pure functions of the results dict that experiments/ablation.py writes to
results.json, so they can be re-run on a copy of it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from codir_jax.data import tasks as tasks_lib


def _cell(mean: float, std: float, n: int, digits: int = 4) -> str:
  """'mean ± std', or just the mean for a single run."""
  return f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if n > 1 else "")


def format_markdown(results: dict[str, Any]) -> str:
  """One table per task: teacher and every variant, mean ± std over seeds."""
  s = results["settings"]
  teacher = s["teacher"] or "all-MiniLM-L6-v2 (bundled)"
  lines = [
      "# CoDIR ablation (GLUE dev)",
      "",
      f"Schedule `{s['schedule']}`: teacher {teacher}; train subset"
      f" {s['subset'] or 'all'}, max_len {s['max_len']}, dev subset"
      f" {s['eval_limit'] or 'all'}; student steps"
      f" {s['steps'] or str(s['epochs']) + ' epochs'}, teacher steps"
      f" {s['teacher_steps'] or str(s['teacher_epochs']) + ' epochs'};"
      f" seeds {', '.join(map(str, s['seeds']))}. Cells: mean ± std"
      " (ddof=1) over seeds; wall time per run in seconds.",
  ]
  for task, r in results["tasks"].items():
    cols = r["metrics"]
    lines += [
        "",
        f"## {tasks_lib.get_task(task).dir_name}",
        "",
        "| model | seeds | " + " | ".join(cols) + " | wall s / run |",
        "|---" * (len(cols) + 3) + "|",
    ]
    t = r["teacher"]
    lines.append(
        "| teacher (fine-tuned) | 1 | "
        + " | ".join(_cell(t["dev"][c], 0.0, 1) for c in cols)
        + f" | {t['wall_s']:.1f} |"
    )
    for name, v in r["variants"].items():
      n = v["n"]
      lines.append(
          f"| {name} | {n} | "
          + " | ".join(_cell(v["mean"][c], v["std"][c], n) for c in cols)
          + f" | {_cell(v['wall_s_mean'], v['wall_s_std'], n, 1)} |"
      )
  return "\n".join(lines) + "\n"


def plot_results(results: dict[str, Any], path: str) -> str:
  """Bar chart per task: each GLUE dev metric's mean, ± std error bars.

  Dots are the individual seeds; the teacher's bar (one run) is hatched.
  """
  import matplotlib  # pylint: disable=g-import-not-at-top

  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top

  task_items = list(results["tasks"].items())
  fig, axes = plt.subplots(
      1, len(task_items), squeeze=False, figsize=(4.5 * len(task_items) + 1, 4)
  )
  for ax, (task, r) in zip(axes[0], task_items):
    cols = list(tasks_lib.get_task(task).metric_names)  # Not their mean.
    names = ["teacher", *r["variants"]]
    width = 0.8 / len(cols)
    for j, col in enumerate(cols):
      means = [r["teacher"]["dev"][col]]
      stds = [np.nan]  # No error bar on the single teacher run.
      seeds = [[r["teacher"]["dev"][col]]]
      for v in r["variants"].values():
        means.append(v["mean"][col])
        stds.append(v["std"][col])
        seeds.append([run["dev"][col] for run in v["runs"]])
      x = np.arange(len(names)) + (j - (len(cols) - 1) / 2) * width
      bars = ax.bar(
          x,
          means,
          width,
          yerr=stds,
          capsize=3,
          label=col,
          color=f"C{j}",
          alpha=0.8,
      )
      bars[0].set_hatch("//")
      for xi, ys in zip(x, seeds):
        ax.plot([xi] * len(ys), ys, "k.", markersize=4)
    ax.set_xticks(np.arange(len(names)))
    ax.set_xticklabels(names, rotation=20)
    ax.set_title(f"{tasks_lib.get_task(task).dir_name} (dev)")
    lo = min(
        min(r["teacher"]["dev"][c] for c in cols),
        *(
            min(run["dev"][c] for run in v["runs"])
            for v in r["variants"].values()
            for c in cols
        ),
    )
    ax.set_ylim(max(0.0, lo - 0.1), 1.0)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="upper right", fontsize=8)
  fig.suptitle("CoDIR ablation: mean ± std over seeds")
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path
