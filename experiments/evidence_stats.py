"""Tables, paired intervals and the plot of experiments/evidence.py.

Pure functions of the run records, so they can be re-run on a copy of
evidence.json without training anything.

Paired comparison. Runs of the same task and seed share the teacher, the
student's initialisation (teacher layers) and the data order, so each
variant is compared with kd seed by seed: d_s = score(variant, s) -
score(kd, s) over the seeds both have. `ci95` is the two-sided 95% t
interval of the mean difference, mean(d) +- t_{0.975, n-1} sd(d) / sqrt(n)
(a t interval rather than a bootstrap: with 5 pairs a bootstrap has only
126 distinct resamples and undercovers). "Beyond noise" means the interval
excludes 0.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

# The baselines every other variant is paired with (`paired_vs_<name>`).
BASELINES = ("kd", "pkd")


def mean_std(values: Sequence[float]) -> tuple[float, float]:
  """Mean and sample standard deviation (ddof=1; 0 for one value)."""
  x = np.asarray(values, np.float64)
  return float(x.mean()), (float(x.std(ddof=1)) if len(x) > 1 else 0.0)


def t_quantile_975(dof: int) -> float:
  """The 0.975 quantile of Student's t with `dof` degrees of freedom."""
  from scipy import stats  # pylint: disable=g-import-not-at-top

  return float(stats.t.ppf(0.975, dof))


def paired(scores: dict[int, float], base: dict[int, float]) -> dict[str, Any]:
  """Paired difference to the baseline over the seeds both have.

  Args:
    scores, base: seed -> score.

  Returns:
    {n, seeds, diffs, mean_diff, sd_diff, ci95: [lo, hi] or None (n < 2),
     method}.
  """
  seeds = sorted(set(scores) & set(base))
  d = [scores[s] - base[s] for s in seeds]
  out = {
      "n": len(seeds),
      "seeds": seeds,
      "diffs": d,
      "method": "paired t interval over seeds",
  }
  if not seeds:
    return {**out, "mean_diff": None, "sd_diff": None, "ci95": None}
  mean, sd = mean_std(d)
  out.update(mean_diff=mean, sd_diff=sd, ci95=None)
  if len(seeds) > 1:
    half = t_quantile_975(len(seeds) - 1) * sd / math.sqrt(len(seeds))
    out["ci95"] = [mean - half, mean + half]
  return out


def verdict(p: dict[str, Any]) -> str:
  """'beyond noise (better|worse)' / 'within noise' / 'too few seeds'."""
  if p["ci95"] is None:
    return "too few seeds"
  lo, hi = p["ci95"]
  if lo > 0:
    return "better beyond noise"
  if hi < 0:
    return "worse beyond noise"
  return "within noise"


def _diff_text(p: dict[str, Any] | None) -> str:
  """'+0.0123 [-0.0040, +0.0286]' (no interval under 2 pairs; '' if none)."""
  if p is None or p["mean_diff"] is None:
    return ""
  if p["ci95"] is None:
    return f"{p['mean_diff']:+.4f}"
  lo, hi = p["ci95"]
  return f"{p['mean_diff']:+.4f} [{lo:+.4f}, {hi:+.4f}]"


def task_table(task: dict[str, Any]) -> list[str]:
  """Markdown rows: teacher, then each variant with its paired diffs."""
  rows = [
      "| model | seeds | score (mean ± std) | Δ vs kd (95% CI) | verdict"
      " | Δ vs pkd (95% CI) | verdict |",
      "|---|---|---|---|---|---|---|",
  ]
  t = task.get("teacher")
  if t:
    rows.append(f"| teacher | 1 | {t['score']:.4f} | | | | |")
  else:
    rows.append("| teacher | 0 | not finished yet | | | | |")
  if task.get("majority_score") is not None:
    rows.append(f"| majority class | | {task['majority_score']:.4f} | | | | |")
  for name, v in task["variants"].items():
    if not v["scores"]:
      rows.append(f"| {name} | 0 | not run yet | | | | |")
      continue
    mean, std = mean_std(v["scores"])
    cells = []
    for base in BASELINES:
      p = task.get(f"paired_vs_{base}", {}).get(name)
      has = p is not None and p["mean_diff"] is not None
      cells += [_diff_text(p), verdict(p) if has else ""]
    rows.append(
        f"| {name} | {len(v['scores'])} | {mean:.4f} ± {std:.4f} | "
        + " | ".join(cells)
        + " |"
    )
  return rows


def answer(task: dict[str, Any], name: str, seeds_planned: int) -> str:
  """One plain sentence: does variant `name` beat kd and pkd beyond noise?

  Beyond noise = the paired 95% t interval excludes 0 (module docstring).
  Marked provisional while a comparison has fewer pairs than planned.
  """
  ps = {b: task.get(f"paired_vs_{b}", {}).get(name) for b in BASELINES}
  if any(p is None or p["ci95"] is None for p in ps.values()):
    return f"{name}: too few paired seeds for an answer yet."
  n = min(p["n"] for p in ps.values())
  better = [b for b, p in ps.items() if p["ci95"][0] > 0]
  worse = [b for b, p in ps.items() if p["ci95"][1] < 0]
  if len(better) == 2:
    claim = "beats both kd and pkd beyond noise"
  elif better:
    other = "pkd" if better == ["kd"] else "kd"
    claim = f"beats {better[0]} beyond noise but not {other}"
  else:
    claim = "beats neither kd nor pkd beyond noise"
  if worse:
    claim += f"; it is worse than {' and '.join(worse)} beyond noise"
  diffs = ", ".join(f"Δ vs {b} {_diff_text(p)}" for b, p in ps.items())
  prefix = (
      ""
      if n >= seeds_planned
      else f"Provisional, {n} of {seeds_planned} seeds: "
  )
  return f"{prefix}{name} {claim} ({diffs}, {n} paired seeds)."


def markdown(results: dict[str, Any], seeds_planned: int) -> str:
  """evidence.md: settings, one table per task, the CPU time spent."""
  lines = ["# Evidence: does CoDIR beat KD and PKD? (GLUE dev)", ""]
  lines += [f"- {line}" for line in results["settings_text"]]
  for name, task in results["tasks"].items():
    lines += ["", f"## {task['title']} ({task['score_name']})", ""]
    lines += task_table(task)
    lines += [""] + [
        f"- {answer(task, v, seeds_planned)}"
        for v in ("codir", "codir_inbatch")
        if v in task["variants"]
    ]
    if task.get("teacher"):
      t = task["teacher"]
      lines += [
          "",
          f"Teacher target: {t['target_text']}; measured"
          f" {t['target_metric']} = {t['target_value']:.4f}"
          f" ({'met' if t['meets_target'] else 'NOT met'}).",
      ]
  c = results["compute"]
  lines += [
      "",
      f"Compute: {c['runs_done']} runs, {c['wall_hours']:.2f} h of"
      f" run wall time on {' + '.join(c['cpu'])}"
      f" ({' or '.join(map(str, c['cores']))} cores a run):"
      f" {c['cpu_hours']:.2f} CPU-hours. Code: {', '.join(c.get('code', []))};"
      f" XLA_FLAGS: {'; '.join(c['xla_flags'])}.",
  ]
  if c.get("source"):
    versions = ", ".join(f"{t} ({n} runs)" for t, n in c["source"].items())
    lines += [
        "",
        "Model and training code (git trees of codir_jax/ + configs/ at"
        f" each run's commit): {versions}"
        + (
            "; one version for every run."
            if len(c["source"]) == 1 and "unknown" not in c["source"]
            else "."
        ),
    ]
  lines += [""]
  return "\n".join(lines)


def plot(results: dict[str, Any], path: str) -> str:
  """Per task: per-seed scores (dots) and the paired Δ vs kd with its CI."""
  import matplotlib  # pylint: disable=g-import-not-at-top

  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top

  tasks = [  # Tasks with a finished student (none yet: empty axes).
      t
      for t in results["tasks"].values()
      if any(v["scores"] for v in t["variants"].values())
  ]
  fig, axes = plt.subplots(
      2,
      max(len(tasks), 1),
      squeeze=False,
      figsize=(4.8 * max(len(tasks), 1), 7),
  )
  for col, task in enumerate(tasks):
    names = list(task["variants"])
    top, bottom = axes[0][col], axes[1][col]
    for i, name in enumerate(names):
      ys = task["variants"][name]["scores"]
      top.plot([i] * len(ys), ys, "o", color=f"C{i}", alpha=0.7)
      if ys:
        top.plot([i - 0.25, i + 0.25], [np.mean(ys)] * 2, "k-")
    if task.get("teacher"):
      top.axhline(
          task["teacher"]["score"], color="gray", ls="--", label="teacher"
      )
    if task.get("majority_score") is not None:
      top.axhline(
          task["majority_score"], color="gray", ls=":", label="majority class"
      )
    if task.get("teacher") or task.get("majority_score") is not None:
      top.legend(loc="lower right", fontsize=8)
    top.set_xticks(range(len(names)))
    top.set_xticklabels(names, rotation=25, fontsize=8)
    top.set_title(f"{task['title']}: dev {task['score_name']}")
    top.grid(axis="y", alpha=0.3)
    others = [
        n
        for n in names
        if n != "kd" and task["paired_vs_kd"].get(n, {}).get("ci95")
    ]
    for i, name in enumerate(others):
      p = task["paired_vs_kd"][name]
      lo, hi = p["ci95"]
      bottom.errorbar(
          [i],
          [p["mean_diff"]],
          yerr=[[p["mean_diff"] - lo], [hi - p["mean_diff"]]],
          fmt="o",
          capsize=4,
          color=f"C{names.index(name)}",
      )
    bottom.axhline(0.0, color="k", lw=0.8)
    bottom.set_xticks(range(len(others)))
    bottom.set_xticklabels(others, rotation=25, fontsize=8)
    bottom.set_title("paired Δ vs kd, 95% t interval")
    bottom.grid(axis="y", alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path
