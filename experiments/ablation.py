r"""CoDIR ablation on GLUE: kd, pkd, codir and codir_inbatch over seeds.

For every task the script fine-tunes the teacher once (mode
`finetune_teacher`, default teacher: the bundled all-MiniLM-L6-v2), then
distils a 3-layer student (teacher layers 2, 4, 6) with each variant of
`configs/base.py:VARIANTS` and each seed, by calling
`codir_jax.train.trainer.train_and_evaluate` with `configs/glue_codir.py`
plus the overrides below. Each run has its own workdir:

  <out>/<task>/teacher/               finetune_teacher (export: teacher/)
  <out>/<task>/<variant>/seed<k>/     distill
  <out>/results.{md,json,png}         mean ± std of the dev metrics
  <out>/jax_cache/                    persistent XLA compilation cache

A run whose `summary.json` exists is skipped (its summary is read back), so
an interrupted ablation resumes where it stopped; a run cut off mid-way
resumes from its own checkpoint. Reusing `--out` with other settings is an
error (the stored `config.json` must match). Every student run re-evaluates
the teacher it loaded; if that differs from the fine-tuned teacher's own dev
score (the HF export did not round-trip), the script stops.

Commands (from the repository root):

  # Default subset settings (SST-2 and MRPC, 4 variants x 3 seeds):
  python experiments/ablation.py --out runs/ablation
  # GLUE from the Hugging Face Hub (pip install -r requirements-hf.txt):
  python experiments/ablation.py --out runs/ablation --source hf --data_dir ''
  # Paper-like settings (GPU/TPU; not run on the 2-core CPU):
  python experiments/ablation.py --full --out runs/ablation_full
  # Smoke test (about 3 minutes on 2 CPU cores):
  python experiments/ablation.py --out /tmp/abl --tasks sst2 --seeds 0 \
      --steps 5 --subset 64 --eval_limit 64

Default (subset) settings, per task: the first 2,000 training examples,
max_len 64, teacher 150 steps at lr 1e-4, students 100 steps at lr 1e-4,
batch 32 (SST-2) / 16 (MRPC) as in `configs/glue_codir.py`, full dev sets
(872 / 408 examples), evaluation only at the end. The lr is 10x the
released code's because the runs are short. Everything else keeps the
config's defaults (paper pooling, layers and InfoNCE; beta 0.5, rho 2,
lambda 0.1 for codir, K = 100, tau 0.07).

Runtime of the default (2 tasks, 1 teacher + 12 students each): about 45
minutes on this project's 2-core CPU machine, measured by timing one seed of
each run kind from its progress lines (SST-2 teacher ~190 s, student
~110-155 s; MRPC teacher ~130 s, student ~60-65 s). codir is the dearest
variant; seeds after the first of a variant load the compiled step from the
persistent cache. On other hardware rerun with `--seeds 0 --steps 50`.

Paper-like settings (`--full`): the whole training set, max_len 128, the
teacher fine-tuned for 3 epochs at lr 2e-5 (BERT's GLUE recipe), students
trained for 10 epochs at the released code's per-task lr and batch (SST-2
1e-5 / 32, MRPC 1e-5 / 16), dev evaluation every 500 steps (the best dev
score is kept in `best_dev`; the table reports the final one). On one
modern GPU: about 1 h per SST-2 student (configs/glue_codir.py), minutes
for MRPC; not run here.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from typing import Any, Sequence

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
  sys.path.insert(0, REPO)

import ml_collections  # noqa: E402

from codir_jax.data import tasks as tasks_lib  # noqa: E402
from configs import base  # noqa: E402
from configs import glue_codir  # noqa: E402
from experiments import ablation_report  # noqa: E402
from experiments import evidence_stats  # noqa: E402
from experiments import runs  # noqa: E402

DEFAULT_DATA_DIR = os.path.join(os.path.dirname(REPO), "shared", "data", "glue")
DEFAULT_TASKS = ("sst2", "mrpc")
DEFAULT_VARIANTS = ("kd", "pkd", "codir", "codir_inbatch")
DEFAULT_SEEDS = (0, 1, 2)
TEACHER_SEED = 0

# Schedules: `subset` fits the 60-minute CPU budget, `full` is paper-like.
# steps = 0 trains for `epochs`; lr = None keeps glue_codir's per-task lr.
SCHEDULES = {
    "subset": dict(
        subset=2000,
        max_len=64,
        eval_limit=0,
        steps=100,
        epochs=10.0,
        lr=1e-4,
        teacher_steps=150,
        teacher_epochs=3.0,
        teacher_lr=1e-4,
        eval_every=0,
    ),
    "full": dict(
        subset=0,
        max_len=128,
        eval_limit=0,
        steps=0,
        epochs=10.0,
        lr=None,
        teacher_steps=0,
        teacher_epochs=3.0,
        teacher_lr=2e-5,
        eval_every=500,
    ),
}


@dataclasses.dataclass(frozen=True)
class Settings:
  """Everything that defines an ablation (stored in results.json)."""

  tasks: tuple[str, ...]
  variants: tuple[str, ...]
  seeds: tuple[int, ...]
  teacher: str  # '' = the bundled all-MiniLM-L6-v2.
  data_dir: str
  source: str  # config.task.source: 'tsv' | 'tfds' | 'hf'.
  schedule: str  # 'subset' | 'full'.
  subset: int  # First N training examples (0 = all).
  max_len: int
  eval_limit: int  # First N dev examples (0 = all).
  steps: int  # Student steps (0 = `epochs`).
  epochs: float
  lr: float | None  # Student lr (None = glue_codir's per-task lr).
  teacher_steps: int  # Teacher steps (0 = `teacher_epochs`).
  teacher_epochs: float
  teacher_lr: float | None
  eval_every: int  # Dev evaluation interval (0 = only at the end).


def _schedule_overrides(
    c: ml_collections.ConfigDict,
    s: Settings,
    *,
    steps: int,
    epochs: float,
    lr: float | None,
) -> None:
  c.task.source = s.source
  c.task.data_dir = s.data_dir
  c.task.max_len = s.max_len
  c.task.eval_limit = s.eval_limit
  c.optim.num_steps = steps
  c.optim.num_epochs = epochs
  if lr is not None:
    c.optim.lr = lr
  c.log.eval_every_steps = s.eval_every
  c.log.every_steps = 25
  if s.schedule == "subset":
    c.ckpt.every_steps = 1000  # Short runs: only the final checkpoint.
    c.log.tensorboard = False


def teacher_config(s: Settings, task: str) -> ml_collections.ConfigDict:
  """finetune_teacher config of `task` (glue_codir + overrides)."""
  c = glue_codir.get_config(f"task={task},subset={s.subset}")
  c.mode = "finetune_teacher"
  c.seed = TEACHER_SEED
  c.teacher.path = s.teacher
  _schedule_overrides(
      c, s, steps=s.teacher_steps, epochs=s.teacher_epochs, lr=s.teacher_lr
  )
  return c


def student_config(
    s: Settings, task: str, variant: str, seed: int, teacher_dir: str
) -> ml_collections.ConfigDict:
  """distill config of one (task, variant, seed) run."""
  c = glue_codir.get_config(f"task={task},variant={variant},subset={s.subset}")
  c.seed = seed
  c.teacher.path = teacher_dir
  _schedule_overrides(c, s, steps=s.steps, epochs=s.epochs, lr=s.lr)
  return c


def metric_columns(task: str) -> list[str]:
  """The task's GLUE dev metrics, plus their mean 'score' if several."""
  names = list(tasks_lib.get_task(task).metric_names)
  return names + ["score"] if len(names) > 1 else names


def summarize_runs(task: str, runs: Sequence[dict]) -> dict[str, Any]:
  """Mean ± std over seeds of each metric and of the wall time."""
  out = {"n": len(runs), "mean": {}, "std": {}}
  for name in metric_columns(task):
    out["mean"][name], out["std"][name] = evidence_stats.mean_std(
        [r["dev"][name] for r in runs]
    )
  out["wall_s_mean"], out["wall_s_std"] = evidence_stats.mean_std(
      [r["wall_s"] for r in runs]
  )
  return out


def _run_record(summary: dict, workdir: str, **extra) -> dict[str, Any]:
  keep = (
      "dev",
      "best_dev",
      "teacher_dev",
      "steps",
      "train_wall_s",
      "wall_s",
      "resumed",
      "speed",
  )
  return {
      **extra,
      "workdir": workdir,
      **{k: summary[k] for k in keep if k in summary},
  }


def run_ablation(
    s: Settings, out: str, *, keep_checkpoints: bool = False
) -> dict[str, Any]:
  """Runs (or resumes) every run of `s` under `out`; returns the results."""
  t0 = time.perf_counter()
  results = {"settings": dataclasses.asdict(s), "tasks": {}}
  for task in s.tasks:
    tdir = os.path.join(out, task)
    workdir = os.path.join(tdir, "teacher")
    t_sum = runs.run_one(
        teacher_config(s, task), workdir, keep_checkpoints=keep_checkpoints
    )
    teacher = _run_record(t_sum, workdir, seed=TEACHER_SEED)
    teacher_dir = t_sum["export"]
    variants = {}
    for variant in s.variants:
      records = []
      for seed in s.seeds:
        workdir = os.path.join(tdir, variant, f"seed{seed}")
        summary = runs.run_one(
            student_config(s, task, variant, seed, teacher_dir),
            workdir,
            keep_checkpoints=keep_checkpoints,
        )
        runs.check_teacher_reload(teacher["dev"], summary, workdir)
        records.append(_run_record(summary, workdir, seed=seed))
      variants[variant] = {"runs": records, **summarize_runs(task, records)}
    results["tasks"][task] = {
        "metrics": metric_columns(task),
        "teacher": teacher,
        "variants": variants,
    }
  results["wall_s_this_call"] = time.perf_counter() - t0
  return results


def write_results(results: dict[str, Any], out: str) -> dict[str, str]:
  """Writes results.json, results.md and results.png; returns their paths."""
  os.makedirs(out, exist_ok=True)
  paths = {
      ext: os.path.join(out, f"results.{ext}") for ext in ("json", "md", "png")
  }
  with open(paths["json"], "w", encoding="utf-8") as f:
    json.dump(results, f, indent=2, default=float)  # Keeps the run order.
  with open(paths["md"], "w", encoding="utf-8") as f:
    f.write(ablation_report.format_markdown(results))
  ablation_report.plot_results(results, paths["png"])
  return paths


def parse_args(
    argv: Sequence[str] | None,
) -> tuple[Settings, argparse.Namespace]:
  """Flags -> Settings (schedule defaults, then explicit flags)."""
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--out", required=True, help="Output directory.")
  p.add_argument(
      "--tasks",
      nargs="+",
      default=list(DEFAULT_TASKS),
      help="GLUE tasks (sst2, mrpc, stsb, ...; SST-2 works too).",
  )
  p.add_argument("--seeds", nargs="+", type=int, default=list(DEFAULT_SEEDS))
  p.add_argument(
      "--variants",
      nargs="+",
      default=list(DEFAULT_VARIANTS),
      choices=sorted(base.VARIANTS),
  )
  p.add_argument(
      "--teacher",
      default="",
      help="HF dir of the teacher ('' = bundled MiniLM-L6).",
  )
  p.add_argument(
      "--data_dir",
      default=DEFAULT_DATA_DIR,
      help="GLUE root in the original TSV layout, or the tfds /"
      " HF datasets data_dir of --source ('' with hf = the Hub).",
  )
  p.add_argument(
      "--source",
      default="tsv",
      choices=("tsv", "tfds", "hf"),
      help="config.task.source: where GLUE is read from.",
  )
  p.add_argument(
      "--full",
      action="store_true",
      help="Paper-like settings (GPU/TPU) instead of the subset.",
  )
  p.add_argument(
      "--steps",
      type=int,
      default=None,
      help="Student steps (also the teacher's unless"
      " --teacher_steps is given; 0 = epochs).",
  )
  p.add_argument("--teacher_steps", type=int, default=None)
  p.add_argument(
      "--subset",
      type=int,
      default=None,
      help="First N training examples (0 = all).",
  )
  p.add_argument(
      "--eval_limit",
      type=int,
      default=None,
      help="First N dev examples (0 = all).",
  )
  p.add_argument("--max_len", type=int, default=None)
  p.add_argument("--lr", type=float, default=None, help="Student lr.")
  p.add_argument("--teacher_lr", type=float, default=None)
  p.add_argument(
      "--jax_cache",
      default=None,
      help="Compilation cache dir (default <out>/jax_cache; '' = the"
      " trainer's own, config.compile_cache).",
  )
  p.add_argument(
      "--keep_checkpoints",
      action="store_true",
      help="Keep finished runs' checkpoints/ (default: delete).",
  )
  a = p.parse_args(argv)
  sched = dict(SCHEDULES["full" if a.full else "subset"])
  for key in ("subset", "eval_limit", "max_len", "lr", "teacher_lr"):
    if getattr(a, key) is not None:
      sched[key] = getattr(a, key)
  if a.steps is not None:
    sched["steps"] = a.steps
    sched["teacher_steps"] = a.steps
  if a.teacher_steps is not None:
    sched["teacher_steps"] = a.teacher_steps
  for name in a.tasks:
    tasks_lib.get_task(name)  # Raises on unknown tasks.
  settings = Settings(
      tasks=tuple(tasks_lib.get_task(t).name for t in a.tasks),
      variants=tuple(a.variants),
      seeds=tuple(a.seeds),
      teacher=os.path.abspath(a.teacher) if a.teacher else "",
      data_dir=os.path.abspath(a.data_dir) if a.data_dir else "",
      source=a.source,
      schedule="full" if a.full else "subset",
      **sched,
  )
  if a.jax_cache is None:
    a.jax_cache = os.path.join(a.out, "jax_cache")
  return settings, a


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  """Runs the ablation of the flags; returns the results dict."""
  settings, args = parse_args(argv)
  out = os.path.abspath(args.out)
  with runs.compilation_cache(args.jax_cache):
    results = run_ablation(
        settings, out, keep_checkpoints=args.keep_checkpoints
    )
  paths = write_results(results, out)
  print(ablation_report.format_markdown(results), flush=True)
  print("Wrote " + ", ".join(paths.values()), flush=True)
  return results


if __name__ == "__main__":
  main()
