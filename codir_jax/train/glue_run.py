"""A fine-tuning run on a GLUE task (modes finetune_teacher and distill).

Loads the task and the models named by the settings and returns a
`run.Run` plus the task data (for the trainer's teacher/student report).
"""

from __future__ import annotations

import functools
import math

from flax import nnx
from jax.sharding import Mesh
import numpy as np

from codir_jax import distributed
from codir_jax import models
from codir_jax.data import pipeline
from codir_jax.data import tokenize
from codir_jax.train import builders
from codir_jax.train import evaluation
from codir_jax.train import objective as objective_lib
from codir_jax.train import run as run_lib
from codir_jax.train import settings as settings_lib
from codir_jax.train import step as step_lib
from codir_jax.train import task_data
from codir_jax.train import teacher_cache


def _task_kind(spec) -> str:
  return "regression" if spec.is_regression else "classification"


def _student(
    s: settings_lib.Settings, teacher_path: str, num_labels: int, tokenizer
) -> nnx.Module:
  """The student: teacher layers copied, or a given HF checkpoint."""
  m = s.models
  dtype = builders.dtype_of(m.student_dtype, "config.student.dtype")
  if m.student_init == "pretrained":
    path = builders.resolve_path(m.student_path, "config.student.path")
    student = builders.load_classifier(
        path, num_labels=num_labels, dtype=dtype, seed=s.seed
    )
    builders.check_models(s, tokenizer, student=student)
    return student
  source = builders.load_classifier(
      teacher_path, num_labels=num_labels, dtype=dtype, seed=s.seed
  )
  return models.make_student(source, list(m.student_layers) or None)


def build_run(s: settings_lib.Settings, workdir: str, mesh: Mesh):
  """Loads data and models for `finetune_teacher` / `distill`.

  Returns:
    (run.Run, task_data.TaskData).
  """
  teacher_path = builders.resolve_path(
      s.models.teacher_path, "config.teacher.path"
  )
  data = task_data.load_train(s.data, teacher_path)
  share = distributed.data_share(mesh)  # This process's rows of a batch.
  local = share.local_batch(s.optim.batch_size)
  distributed.check_share(len(data.train), share, local, "the training set")
  spec = data.spec
  t_dtype = builders.dtype_of(s.models.teacher_dtype, "config.teacher.dtype")
  if s.mode == "finetune_teacher":
    model = builders.load_classifier(
        teacher_path,
        num_labels=spec.num_labels,
        dtype=t_dtype,
        seed=s.seed,
    )
    teacher = None
    builders.check_models(s, data.tokenizer, teacher=model)
    obj_spec = objective_lib.Spec(task_kind=_task_kind(spec))
    export_name = "teacher"
  else:
    builders.require_head(
        teacher_path, s.loss.kd_weight, suffix="ForSequenceClassification"
    )
    teacher = builders.load_classifier(
        teacher_path,
        num_labels=spec.num_labels,
        dtype=t_dtype,
        seed=s.seed,
    )
    builders.check_models(s, data.tokenizer, teacher=teacher)
    model = _student(s, teacher_path, spec.num_labels, data.tokenizer)
    obj_spec = objective_lib.spec_from_settings(
        s,
        task_kind=_task_kind(spec),
        num_student=model.config.num_layers,
        num_teacher=teacher.config.num_layers,
        num_train=len(data.train),
    )
    export_name = "student"
  graphs, params = builders.trainable(
      s, model, teacher, projection=obj_spec.crd_weight > 0
  )
  o = s.optim
  steps_per_epoch = math.ceil(len(data.train) / o.batch_size)
  total = int(o.num_steps) or int(math.ceil(o.num_epochs * steps_per_epoch))
  buckets = tokenize.make_buckets(s.data.max_len, s.data.min_bucket)
  objective = objective_lib.build(obj_spec)
  cached = None
  if s.models.teacher_cache:  # Modes and weights: config_checks.
    cached = teacher_cache.load_or_build(
        functools.partial(step_lib.teacher_outputs, graphs, obj=objective),
        nnx.state(teacher),
        data.train,
        cache_dir=teacher_cache.resolve_dir(s.models.teacher_cache_dir),
        buckets=buckets,
        teacher_layers=obj_spec.teacher_layers,
        pooling=obj_spec.pooling,
        dtype=s.models.teacher_dtype,
        batch_size=s.data.eval_batch_size,
    )

  def make_iterator():
    batches = pipeline.BatchIterator(
        data.train,
        batch_size=local,
        shuffle=True,
        seed=s.seed,
        buckets=buckets,
        process_index=share.index,
        process_count=share.count,
    )
    if cached is None:
      return batches
    return teacher_cache.WithTeacherOutputs(batches, cached)

  evaluate = functools.partial(
      evaluation.evaluate_params,
      data=data.eval,
      mesh=mesh,
      batch_size=s.data.eval_batch_size,
  )
  return (
      run_lib.Run(
          workdir=workdir,
          mesh=mesh,
          model=model,
          teacher_model=teacher,
          graphs=graphs,
          params=params,
          objective=objective,
          make_iterator=make_iterator,
          evaluate=evaluate,
          tokenizer=data.tokenizer,
          bank_slots=len(data.train) if obj_spec.uses_bank else 0,
          bank_labels=np.asarray(data.train.labels)
          if obj_spec.uses_bank
          else None,
          bank_all_valid=s.bank.all_valid_at_init,
          export_name=export_name,
          fingerprint={"task": spec.name, "num_train": len(data.train)},
          teacher_cache=("off", "")
          if cached is None
          else (cached.status, cached.path),
          **builders.run_settings(s, total_steps=total),
      ),
      data,
  )
