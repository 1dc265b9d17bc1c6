"""What experiments/evidence.py runs (the plan) and how records summarise.

The schedule per task is stated here and stored in evidence.json. Choices
for a 2-core CPU without a GPU (issue: about 8 CPU-hours per budget):

  * teachers: the whole training set, lr 5e-5 (MiniLM-L6 converges slowly
    at BERT-base's 2e-5), evaluated `teacher_evals_per_epoch` times an
    epoch, stopped after `teacher_patience` evaluations without a better dev
    score; the best checkpoint is the teacher.
  * students: 3 layers (teacher layers 2, 4, 6), the same early stopping
    with their own cadence and patience, lr 5e-5 and at most 1 epoch for
    every variant (evaluated every half epoch; the best is kept); SST-2
    students train on a fixed subset (the first 20,000 training examples,
    as the issue allows); dev is always the full set.
  * what 1 epoch at lr 5e-5 leaves on the table (a pilot, MRPC kd seed 0,
    dev score every half epoch over 3 epochs, 2026-12-02, not in the
    table): at lr 5e-5 the score wanders (0.754, 0.743, 0.738, 0.765,
    0.752, 0.755; the 1-epoch run's best is 0.757), so more epochs at this
    lr buy nothing clear; at lr 2e-4 it climbs (0.740, 0.755, 0.763, 0.773,
    0.772, 0.783) and was still rising. MRPC students here sit near the
    majority-class score (accuracy 0.684, F1 0.812: 0.748), a budget regime,
    not the paper's 10-epoch one; 3 epochs at 2e-4 would cost 3x.
  * cost: a student step is a teacher forward plus a 3-layer forward and
    backward. Students cache the teacher (offline KD, teacher.cache_outputs,
    codir_jax/train/teacher_cache.py): the teacher's logits and pooled
    mapped layers of every training example are computed once per task
    (one forward pass over the training set, 72 s on MRPC, kept in
    <out>/teacher_outputs) and read by every step of every seed and
    variant. The cached outputs equal the per-step teacher forward up to
    the float rounding of another padding length (each example at its own
    bucket): max abs difference 2.4e-7 (tests/train/teacher_cache_test.py).
    The driver also turns XLA's YNNPACK dots off (evidence.py --xla_flags).
    Measured on the MRPC codir student step (2-core AVX2 EPYC, quiet, 14
    steps of real batches): 1.97 s/step with the teacher in the step and
    YNNPACK, 1.56 s with Eigen dots, 1.12 s with Eigen and the cache. The
    69 student runs at 1 epoch are ~27k steps, so ~8.5 machine-hours plus
    dev evaluations (the issue budgets ~8 CPU-hours). The SST-2 teacher is
    capped at 1 epoch (2,100 steps of 32).
  * max_len: no training example is truncated (MRPC 104, STS-B 128, SST-2
    64 word pieces); batches pad to the bucket of their longest example.
  * lambda = 0.1 (codir, codir_inbatch), mu = 100 (pkd), beta = 0.5, rho = 2,
    K = 100, tau = 0.07: configs/base.py. The released variant uses
    lambda = 0.1 * B so that its lambda / B equals codir's 0.1.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import os
from typing import Any, Callable, Sequence

import numpy as np

from codir_jax.data import tasks as tasks_lib
from experiments import evidence_stats as stats
from experiments import runs


@dataclasses.dataclass(frozen=True)
class TaskSchedule:
  train_size: int  # Training examples of the full set.
  max_len: int
  min_bucket: int
  batch_size: int
  teacher_lr: float
  teacher_epochs: float  # Upper bound; early stopping ends sooner.
  teacher_evals_per_epoch: int
  teacher_patience: int  # Evaluations without improvement before stopping.
  student_lr: float
  student_epochs: float
  student_train_limit: int  # 0 = the full training set.
  student_evals_per_epoch: int
  student_patience: int
  target_metric: str  # The teacher target.
  target: float


TASKS = {
    # Longest train pair: 103 word pieces; buckets 32, 64, 104.
    "mrpc": TaskSchedule(
        train_size=3668,
        max_len=104,
        min_bucket=32,
        batch_size=16,
        teacher_lr=5e-5,
        teacher_epochs=6.0,
        teacher_evals_per_epoch=2,
        teacher_patience=3,
        student_lr=5e-5,
        student_epochs=1.0,
        student_train_limit=0,
        student_evals_per_epoch=2,
        student_patience=2,
        target_metric="accuracy",
        target=0.80,
    ),
    # Longest train pair: 125 word pieces; buckets 32, 64, 128.
    "stsb": TaskSchedule(
        train_size=5749,
        max_len=128,
        min_bucket=32,
        batch_size=16,
        teacher_lr=5e-5,
        teacher_epochs=6.0,
        teacher_evals_per_epoch=2,
        teacher_patience=3,
        student_lr=5e-5,
        student_epochs=1.0,
        student_train_limit=0,
        student_evals_per_epoch=2,
        student_patience=2,
        target_metric="pearson",
        target=0.80,
    ),
    # Longest train sentence: 63 word pieces; buckets 16, 32, 64.
    "sst2": TaskSchedule(
        train_size=67349,
        max_len=64,
        min_bucket=16,
        batch_size=32,
        teacher_lr=5e-5,
        teacher_epochs=1.0,
        teacher_evals_per_epoch=4,
        teacher_patience=3,
        student_lr=5e-5,
        student_epochs=1.0,
        student_train_limit=20000,
        student_evals_per_epoch=2,
        student_patience=2,
        target_metric="accuracy",
        target=0.88,
    ),
}
# --smoke: the same plan shape on a tiny task (64 train examples; tests).
SMOKE_TASKS = {
    name: TaskSchedule(
        train_size=64,
        max_len=16,
        min_bucket=16,
        batch_size=8,
        teacher_lr=3e-3,
        teacher_epochs=4.0,
        teacher_evals_per_epoch=1,
        teacher_patience=2,
        student_lr=1e-3,
        student_epochs=1.0,
        student_train_limit=0,
        student_evals_per_epoch=2,
        student_patience=1,
        target_metric=TASKS[name].target_metric,
        target=TASKS[name].target,
    )
    for name in TASKS
}
MAIN_VARIANTS = ("kd", "pkd", "codir", "codir_inbatch")
MAIN_SEEDS = (0, 1, 2, 3, 4)
EXTRA_TASK = "mrpc"  # The released variant and the lambda sweep.
EXTRA_SEEDS = (0, 1, 2)
SWEEP_LAMBDAS = (0.01, 1.0)  # 0.1 is the codir row.


@dataclasses.dataclass(frozen=True)
class Run:
  task: str
  kind: str  # 'teacher' | 'student'.
  variant: str = ""  # configs/base.py VARIANTS name.
  seed: int = 0
  lam: float | None = None  # lambda override.
  released: bool = False

  @property
  def label(self) -> str:
    """The row name in the tables."""
    if self.kind == "teacher":
      return "teacher"
    if self.released:
      return "released"
    if self.lam is not None and self.variant == "codir":
      return f"codir_lam{self.lam:g}"
    return self.variant

  @property
  def name(self) -> str:
    """<task>/<label>/seed<k> (the workdir under --out)."""
    if self.kind == "teacher":
      return f"{self.task}/teacher"
    return f"{self.task}/{self.label}/seed{self.seed}"


def teacher_of(run: Run) -> Run:
  return Run(task=run.task, kind="teacher")


def make_plan(
    task_names: Sequence[str],
    *,
    seeds: Sequence[int] = MAIN_SEEDS,
    variants: Sequence[str] = MAIN_VARIANTS,
    tasks: dict[str, TaskSchedule] | None = None,
) -> list[Run]:
  """Teachers, then students seed-major (paired results at any time)."""
  tasks = TASKS if tasks is None else tasks
  plan = []
  for task in task_names:
    plan.append(Run(task=task, kind="teacher"))
    extra = []
    if task == EXTRA_TASK:
      batch = tasks[task].batch_size
      extra = [Run(task, "student", "codir", lam=0.1 * batch, released=True)]
      extra += [Run(task, "student", "codir", lam=l) for l in SWEEP_LAMBDAS]
    for seed in seeds:
      for v in variants:
        plan.append(Run(task=task, kind="student", variant=v, seed=seed))
      if seed in EXTRA_SEEDS:
        plan += [dataclasses.replace(r, seed=seed) for r in extra]
  return plan


def _epochs(n: float) -> str:
  return f"{n:g} epoch" + ("" if n == 1 else "s")


def _schedule_text(tasks: dict[str, TaskSchedule]) -> list[str]:
  lines = []
  for name, s in tasks.items():
    subset = (
        f"first {s.student_train_limit:,} training examples"
        if s.student_train_limit
        else "the full training set"
    )
    lines.append(
        f"{tasks_lib.get_task(name).dir_name}: max_len {s.max_len}, batch"
        f" {s.batch_size}; teacher on all {s.train_size:,} examples, lr"
        f" {s.teacher_lr:g}, at most {_epochs(s.teacher_epochs)}, dev"
        f" {s.teacher_evals_per_epoch}x per epoch, patience"
        f" {s.teacher_patience}; students on {subset}, lr {s.student_lr:g},"
        f" at most {_epochs(s.student_epochs)}, dev"
        f" {s.student_evals_per_epoch}x per epoch, patience"
        f" {s.student_patience} (evaluations without a better dev score)."
        " A run's score is its best dev score (its exported best/ model)."
    )
  lines.append(
      f"Seeds {list(MAIN_SEEDS)} for {', '.join(MAIN_VARIANTS)};"
      f" {EXTRA_TASK.upper()} adds the released-code variant and lambda"
      f" {', '.join(f'{l:g}' for l in SWEEP_LAMBDAS)} over seeds"
      f" {list(EXTRA_SEEDS)}. Teacher: the bundled all-MiniLM-L6-v2;"
      " students: its layers 2, 4, 6."
  )
  return lines


@functools.lru_cache(maxsize=None)  # Re-read after every run otherwise.
def majority_score(task: str, data_dir: str) -> float | None:
  """Dev score of always predicting the most frequent training label.

  The floor a student must clear to have learned anything (MRPC: accuracy
  0.684, F1 0.812). None for STS-B: a constant has no correlation.
  """
  if tasks_lib.get_task(task).is_regression:
    return None
  from codir_jax.data import glue, metrics  # pylint: disable=g-import-not-at-top

  train = glue.load_split(task, "train", data_dir=data_dir)
  dev = glue.load_split(task, "dev", data_dir=data_dir)
  label = int(np.bincount(train.labels).argmax())
  guess = np.full_like(dev.labels, label)
  return float(metrics.glue_metrics(task, guess, dev.labels)["score"])


def summarize(
    records: dict[str, Any],
    plan: Sequence[Run],
    tasks_sched: dict[str, TaskSchedule],
    majority: dict[str, float | None] | None = None,
    source_of: Callable[[str], str] | None = None,
) -> dict[str, Any]:
  """evidence.json's body (without 'runs') from the run records.

  `majority`: task -> `majority_score` (stored as the task's floor).
  `source_of`: a record's code version -> the version of the model and
  training code it ran (`runs.source_tree`); counted per version in
  compute["source"] when given.
  """
  tasks: dict[str, Any] = {}
  for run in plan:
    spec = tasks_lib.get_task(run.task)
    task = tasks.setdefault(
        run.task,
        {
            "title": spec.dir_name,
            "score_name": " / ".join(spec.metric_names)
            + (" mean" if len(spec.metric_names) > 1 else ""),
            "teacher": None,
            "majority_score": (majority or {}).get(run.task),
            "variants": {},
            **{f"paired_vs_{b}": {} for b in stats.BASELINES},
        },
    )
    rec = records.get(run.name)
    if run.kind == "teacher":
      if rec is not None:
        sched = tasks_sched[run.task]
        value = rec["best_dev"][sched.target_metric]
        task["teacher"] = {
            "score": rec["score"],
            "best_dev": rec["best_dev"],
            "steps": rec["steps"],
            "target_metric": sched.target_metric,
            "target_value": value,
            "meets_target": value >= sched.target,
            "target_text": f"{sched.target_metric} >= {sched.target:g}",
        }
      continue
    v = task["variants"].setdefault(run.label, {"seeds": [], "scores": []})
    if rec is not None:
      v["seeds"].append(run.seed)
      v["scores"].append(rec["score"])
  for task in tasks.values():
    for base_name in stats.BASELINES:
      if base_name not in task["variants"]:
        continue
      bv = task["variants"][base_name]
      base = dict(zip(bv["seeds"], bv["scores"]))
      for name, v in task["variants"].items():
        if name not in ("kd", base_name):  # pkd is kd's baseline, not ours.
          task[f"paired_vs_{base_name}"][name] = stats.paired(
              dict(zip(v["seeds"], v["scores"])), base
          )
  done = list(records.values())
  here = runs.cpu_name()
  wall_h = sum(r["wall_s"] for r in done) / 3600.0
  # Records made before runs stored their cores ran on all of them.
  machine = os.cpu_count() or 1
  cores = [r.get("cores", machine) for r in done]
  compute = {
      "runs_done": len(done),
      "wall_hours": wall_h,
      "cores": sorted(set(cores)) or [machine],
      "cpu_hours": sum(r["wall_s"] * n for r, n in zip(done, cores)) / 3600.0,
      # Records made before runs stored their CPU count as this one.
      "cpu": sorted({r.get("cpu", here) for r in done} or {here}),
      "xla_flags": sorted({r.get("xla_flags", "unrecorded") for r in done}),
      "code": sorted({r.get("code", "unrecorded") for r in done}),
  }
  if source_of is not None:
    versions = (source_of(r.get("code", "unrecorded")) for r in done)
    compute["source"] = dict(collections.Counter(versions).most_common())
  return {
      "settings_text": _schedule_text(tasks_sched),
      "schedule": {k: dataclasses.asdict(v) for k, v in tasks_sched.items()},
      "tasks": tasks,
      "compute": compute,
  }
