"""The trainer config of each evidence run (experiments/evidence.py).

`run_config` turns a plan entry (`evidence_plan.Run`) and its task's
schedule (`evidence_plan.TASKS`) into the glue_codir config the trainer
runs; `PLACE_KEYS` are the keys that name places, left out of the recipe
hash that decides whether a recorded run is the same run.
"""

from __future__ import annotations

import ml_collections

from configs import glue_codir
from experiments import evidence_plan as plan_lib

# Keys that name places, not the recipe: excluded from the config hash.
PLACE_KEYS = (
    "task.data_dir",
    "teacher.path",
    "eval.model_path",
    "teacher.cache_dir",
)


def run_config(
    run: plan_lib.Run,
    *,
    data_dir: str,
    teacher_dir: str,
    base_teacher: str = "",
    tasks: dict | None = None,
    teacher_outputs: str = "",
) -> ml_collections.ConfigDict:
  """The trainer config of one run (glue_codir + the task schedule).

  Args:
    run: the run.
    data_dir: GLUE root.
    teacher_dir: the fine-tuned teacher (students).
    base_teacher: the HF dir the teacher is fine-tuned from ('' = bundled).
    tasks: the schedules (default `evidence_plan.TASKS`).
    teacher_outputs: students' cache of the teacher's outputs ('' = the
      trainer's default dir); the teacher runs once per task, not per step.
  """
  sched = (tasks or plan_lib.TASKS)[run.task]
  arg = f"task={run.task}"
  if run.kind == "student":
    arg += f",variant={run.variant}"
    if run.released:
      arg += ",released"
  c = glue_codir.get_config(arg)
  c.seed = run.seed
  c.task.data_dir = data_dir
  c.task.max_len = sched.max_len
  c.task.min_bucket = sched.min_bucket
  c.optim.batch_size = sched.batch_size
  c.log.every_steps = 50
  c.log.tensorboard = False
  c.ckpt.keep = 1
  if run.kind == "teacher":
    c.mode = "finetune_teacher"
    c.teacher.path = base_teacher  # '' = the bundled all-MiniLM-L6-v2.
    c.optim.lr = sched.teacher_lr
    c.optim.num_epochs = sched.teacher_epochs
    train_size = sched.train_size
    evals, patience = sched.teacher_evals_per_epoch, sched.teacher_patience
  else:
    c.teacher.path = teacher_dir
    c.teacher.cache_outputs = True  # Offline KD (evidence_plan: cost).
    c.teacher.cache_dir = teacher_outputs
    c.optim.lr = sched.student_lr
    c.optim.num_epochs = sched.student_epochs
    c.task.train_limit = sched.student_train_limit
    train_size = sched.student_train_limit or sched.train_size
    if run.lam is not None:
      c.loss.crd_weight = run.lam
    evals, patience = sched.student_evals_per_epoch, sched.student_patience
    # Teacher dev score and inference speed once per task (seed 0 of kd):
    # they cost minutes per run and do not change between students.
    c.eval.compare_teacher = run.variant == "kd" and run.seed == 0
  steps_per_epoch = -(-train_size // sched.batch_size)
  c.log.eval_every_steps = max(1, steps_per_epoch // evals)
  c.log.eval_patience = patience
  c.ckpt.every_steps = c.log.eval_every_steps
  return c
