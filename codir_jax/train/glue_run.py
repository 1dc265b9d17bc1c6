"""A fine-tuning run on a GLUE task (modes finetune_teacher and distill).

Reads the config (the edge), loads the task and the models, and returns a
`loop.Run` plus the task data (for the trainer's teacher/student report).
"""

from __future__ import annotations

import functools
import math

from flax import nnx
import jax
from jax.sharding import Mesh
import numpy as np

from codir_jax import models
from codir_jax.data import pipeline
from codir_jax.data import tokenize
from codir_jax.train import builders
from codir_jax.train import evaluation
from codir_jax.train import loop
from codir_jax.train import step as step_lib
from codir_jax.train import task_data

_CHOICES = {
    "loss.objective": ("info_nce", "nce"),
    "loss.negatives": ("bank", "in_batch"),
    "loss.pooling": ("mean", "first"),
    "loss.combine": ("concat", "per_layer"),
    "loss.positive": ("current", "bank"),
    "student.init": ("teacher_layers", "pretrained"),
}


def _task_kind(spec) -> str:
  return "regression" if spec.is_regression else "classification"


def check_choices(config) -> None:
  for key, allowed in _CHOICES.items():
    group, name = key.split(".")
    value = config[group][name]
    if value not in allowed:
      raise ValueError(f"config.{key} = {value!r}; choose from {allowed}")


def loss_settings(config, *, task_kind, num_student, num_teacher,
                  num_train, bank_kind="momentum") -> step_lib.LossSettings:
  """config.loss / config.bank -> validated LossSettings."""
  l, b = config.loss, config.bank
  if l.crd_weight > 0:
    if l.combine == "per_layer" and l.negatives == "bank":
      raise ValueError(
          "config.loss.combine = 'per_layer' needs config.loss.negatives ="
          " 'in_batch' (the memory bank stores one concatenated vector)"
      )
    if l.negatives == "in_batch" and (
        l.objective != "info_nce" or l.positive != "current"
    ):
      raise ValueError(
          "in-batch negatives use InfoNCE with current positives: set"
          " config.loss.objective='info_nce' and config.loss.positive="
          "'current'"
      )
    if b.num_negatives < 1:
      raise ValueError(f"config.bank.num_negatives = {b.num_negatives} < 1")
  if not 0.0 <= l.kd_weight <= 1.0:
    raise ValueError(f"config.loss.kd_weight = {l.kd_weight}; need [0, 1]")
  return step_lib.LossSettings(
      task_kind=task_kind,
      bank_kind=bank_kind,
      kd_weight=float(l.kd_weight),
      kd_temperature=float(l.kd_temperature),
      crd_weight=float(l.crd_weight),
      pkd_weight=float(l.pkd_weight),
      temperature=float(l.temperature),
      objective=l.objective,
      negatives=l.negatives,
      pooling=l.pooling,
      combine=l.combine,
      positive=l.positive,
      student_layers=tuple(range(1, num_student + 1)),
      teacher_layers=builders.teacher_layer_ids(
          l.teacher_layers, num_student=num_student, num_teacher=num_teacher
      ),
      num_negatives=int(b.num_negatives),
      momentum=float(b.momentum),
      label_aware=bool(b.label_aware),
      regression_gap=float(b.regression_gap),
      num_train_examples=num_train,
      shared_negatives=bool(b.shared_negatives),
      crd_batch_scaled=bool(l.crd_batch_scaled),
  )


def _student(config, teacher_path: str, num_labels: int) -> nnx.Module:
  """The student: teacher layers copied, or a given HF checkpoint."""
  dtype = builders.dtype_of(config.student.dtype, "config.student.dtype")
  if config.student.init == "pretrained":
    path = builders.resolve_path(config.student.path, "config.student.path")
    return builders.load_classifier(
        path, num_labels=num_labels, dtype=dtype, seed=config.seed
    )
  source = builders.load_classifier(
      teacher_path, num_labels=num_labels, dtype=dtype, seed=config.seed
  )
  layers = list(config.student.layers) or None
  return models.make_student(source, layers)


def build_run(config, workdir: str, mesh: Mesh):
  """Loads data and models for `finetune_teacher` / `distill`.

  Returns:
    (loop.Run, task_data.TaskData).
  """
  check_choices(config)
  teacher_path = builders.resolve_path(config.teacher.path,
                                       "config.teacher.path")
  data = task_data.load_train(config, teacher_path)
  spec = data.spec
  t_dtype = builders.dtype_of(config.teacher.dtype, "config.teacher.dtype")
  if config.mode == "finetune_teacher":
    model = builders.load_classifier(
        teacher_path, num_labels=spec.num_labels, dtype=t_dtype,
        seed=config.seed,
    )
    teacher = None
    loss = step_lib.LossSettings(task_kind=_task_kind(spec))
    export_name = "teacher"
  else:
    builders.require_head(teacher_path, config.loss.kd_weight,
                          suffix="ForSequenceClassification")
    teacher = builders.load_classifier(
        teacher_path, num_labels=spec.num_labels, dtype=t_dtype,
        seed=config.seed,
    )
    model = _student(config, teacher_path, spec.num_labels)
    loss = loss_settings(
        config,
        task_kind=_task_kind(spec),
        num_student=model.config.num_layers,
        num_teacher=teacher.config.num_layers,
        num_train=len(data.train),
    )
    export_name = "student"
  graphs, params = builders.trainable(config, model, teacher,
                                      projection=loss.crd_weight > 0)
  o = config.optim
  steps_per_epoch = math.ceil(len(data.train) / o.batch_size)
  total = int(o.num_steps) or int(math.ceil(o.num_epochs * steps_per_epoch))
  n_proc = jax.process_count()
  buckets = tokenize.make_buckets(config.task.max_len, config.task.min_bucket)

  def make_iterator():
    return pipeline.BatchIterator(
        data.train, batch_size=o.batch_size // n_proc, shuffle=True,
        seed=config.seed, buckets=buckets,
        process_index=jax.process_index(), process_count=n_proc,
    )

  evaluate = functools.partial(
      evaluation.evaluate_params, data=data.eval, mesh=mesh,
      batch_size=config.task.eval_batch_size,
  )
  return loop.Run(
      workdir=workdir,
      mesh=mesh,
      model=model,
      teacher_model=teacher,
      graphs=graphs,
      params=params,
      loss=loss,
      make_iterator=make_iterator,
      evaluate=evaluate,
      tokenizer=data.tokenizer,
      bank_slots=len(data.train) if loss.uses_bank else 0,
      bank_labels=np.asarray(data.train.labels) if loss.uses_bank else None,
      bank_all_valid=bool(config.bank.all_valid_at_init),
      export_name=export_name,
      fingerprint={"task": spec.name, "num_train": len(data.train)},
      **builders.run_settings(config, total_steps=total),
  ), data

