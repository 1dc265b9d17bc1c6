"""Orchestration: set-up, restore, the train loop, evaluation, export.

`train_and_evaluate(config, workdir)` is the library entry point (the CLI
only parses flags). `settings.from_config` turns the ConfigDict into frozen
settings at the edge; everything below takes those plain values.

Workdir layout:
  config.json            the resolved config of the run
  checkpoints/<step>/    Orbax checkpoints (train state + data position)
  metrics.jsonl          one JSON object per logged step / evaluation
  tensorboard/           TensorBoard event files
  best/                  HF export of the best model on the dev metric
  student/ or teacher/   HF export of the final model (transformers loads it)
  summary.json           final dev metrics, speeds and wall time
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from flax import nnx
import jax
import ml_collections

from codir_jax import compile_cache
from codir_jax import distributed
from codir_jax import sharding
from codir_jax.train import builders
from codir_jax.train import evaluation
from codir_jax.train import glue_run
from codir_jax.train import loop
from codir_jax.train import pretrain_run
from codir_jax.train import recipe
from codir_jax.train import settings as settings_lib
from codir_jax.train import task_data

MODES = settings_lib.MODES


def _write_atomically(path: str, text: str) -> None:
  """Writes `text` to `path` via a temporary file and one rename."""
  if jax.process_index() != 0:
    return
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tmp = path + ".tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    f.write(text)
  os.replace(tmp, path)


def _write_summary(
    workdir: str, summary: dict[str, Any], name: str = "summary.json"
) -> None:
  _write_atomically(
      os.path.join(workdir, name),
      json.dumps(summary, indent=2, sort_keys=True, default=float),
  )


def _print_summary(title: str, summary: dict[str, Any]) -> None:
  if jax.process_index() != 0:
    return
  print(f"== {title} ==", flush=True)
  for key in sorted(summary):
    value = summary[key]
    if isinstance(value, dict):
      shown = ", ".join(
          f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}"
          for k, v in sorted(value.items())
      )
      print(f"  {key}: {shown}", flush=True)
    elif isinstance(value, float):
      print(f"  {key}: {value:.4f}", flush=True)
    else:
      print(f"  {key}: {value}", flush=True)


def _fit(
    s: settings_lib.Settings, workdir: str, run, t0: float
) -> tuple[Any, dict]:
  """Trains `run`; returns (FitResult, summary), summary None if preempted.

  config.json is written only once the run is set up and restored, so a bad
  config leaves an existing workdir untouched.
  """
  config_path = os.path.join(workdir, "config.json")
  result = loop.fit(
      run, on_ready=lambda: _write_atomically(config_path, s.config_json)
  )
  if result.preempted:
    return result, None
  return result, {
      "mode": s.mode,
      "steps": result.steps,
      "train_wall_s": result.wall_s,
      "total_wall_s": time.perf_counter() - t0,
      "export": result.export_dir,
      "dev": result.final_eval,
      "best_dev": result.best_eval,
  }


def _finished(s: settings_lib.Settings, workdir: str, title: str):
  """The stored summary if `workdir` finished this recipe (else None).

  Refuses a workdir whose run has another recipe (`recipe.py`) before
  anything is loaded or written.
  """
  stored = recipe.check_resume(
      workdir, s.config_json, defaults=settings_lib.base_defaults()
  )
  if stored is not None:
    if jax.process_index() == 0:
      print(f"{workdir} already holds this finished run.", flush=True)
    _print_summary(title, stored)
  return stored


def _preempted(s: settings_lib.Settings, result) -> dict[str, Any]:
  return {"mode": s.mode, "preempted": True, "steps": result.steps}


def _train(s: settings_lib.Settings, workdir: str, mesh) -> dict[str, Any]:
  """finetune_teacher / distill: train, evaluate, export."""
  t0 = time.perf_counter()
  done = _finished(s, workdir, f"{s.mode} {s.data.task}")
  if done is not None:
    return done
  run, data = glue_run.build_run(s, workdir, mesh)
  result, summary = _fit(s, workdir, run, t0)
  if summary is None:
    return _preempted(s, result)
  summary["task"] = s.data.task
  summary["teacher_cache"], summary["teacher_cache_path"] = run.teacher_cache
  if s.mode == "distill" and s.eval.compare_teacher:
    summary["speed"] = evaluation.compare_speed(
        data.eval,
        {"teacher": run.teacher_model, "student": result.model},
        mesh=mesh,
        batch_size=s.data.eval_batch_size,
    )
    summary["teacher_dev"] = evaluation.evaluate_model(
        run.teacher_model,
        data.eval,
        mesh=mesh,
        batch_size=s.data.eval_batch_size,
    )
  _write_summary(workdir, summary)
  _print_summary(f"{s.mode} {s.data.task}", summary)
  return summary


def _pretrain(s: settings_lib.Settings, workdir: str, mesh) -> dict[str, Any]:
  """pretrain_distill: CoDIR-Pre, then the MLM metrics of both models."""
  t0 = time.perf_counter()
  done = _finished(s, workdir, "pretrain_distill")
  if done is not None:
    return done
  run, eval_batches = pretrain_run.build_run(s, workdir, mesh)
  result, summary = _fit(s, workdir, run, t0)
  if summary is None:
    return _preempted(s, result)
  if eval_batches:
    graphdef, params = nnx.split(run.teacher_model)
    summary["teacher_dev"] = evaluation.evaluate_mlm(
        graphdef, params, eval_batches, mesh=mesh
    )
  _write_summary(workdir, summary)
  _print_summary("pretrain_distill", summary)
  return summary


def _saved_model(s: settings_lib.Settings, workdir: str, load):
  """(path, TaskData, classifier) for evaluate / predict.

  The model is `config.eval.model_path` ('' = `<workdir>/student`), in the
  student's compute dtype; `load` is `task_data.load_eval` or `load_predict`.
  """
  path = builders.resolve_path(
      s.eval.model_path or os.path.join(workdir, "student"),
      "config.eval.model_path",
  )
  data = load(s.data, path)
  model = builders.load_classifier(
      path,
      num_labels=data.spec.num_labels,
      dtype=builders.dtype_of(s.models.student_dtype, "config.student.dtype"),
      seed=s.seed,
  )
  return path, data, model


def _evaluate(s: settings_lib.Settings, workdir: str, mesh) -> dict[str, Any]:
  path, data, model = _saved_model(s, workdir, task_data.load_eval)
  summary = {
      "model": path,
      "dev": evaluation.evaluate_model(
          model, data.eval, mesh=mesh, batch_size=s.data.eval_batch_size
      ),
  }
  _write_summary(workdir, summary, "eval_summary.json")
  _print_summary(f"evaluate {s.data.task}", summary)
  return summary


def _predict(s: settings_lib.Settings, workdir: str, mesh) -> dict[str, Any]:
  path, data, model = _saved_model(s, workdir, task_data.load_predict)
  out_dir = os.path.join(workdir, "predictions")
  files = evaluation.write_predictions(
      model,
      data.splits,
      out_dir,
      mesh=mesh,
      batch_size=s.data.eval_batch_size,
  )
  summary = {"model": path, "prediction_files": files}
  _write_summary(workdir, summary, "predict_summary.json")
  _print_summary(f"predict {s.data.task}", summary)
  return summary


def _demo(
    config: ml_collections.ConfigDict, workdir: str, mesh
) -> dict[str, Any]:
  """Teacher fine-tuning, then distillation, then a comparison.

  With `config.task.data_dir` empty the demo writes its embedded task
  (templated sentiment sentences in the SST-2 layout) to
  `<workdir>/demo_data`; otherwise it runs on the given GLUE directory.
  """
  num_train, num_dev, data_dir = settings_lib.demo_task_size(config)
  seed = settings_lib.from_config(config).seed
  if not data_dir:
    data_dir = task_data.write_demo_task(
        os.path.join(workdir, "demo_data"),
        num_train=num_train,
        num_dev=num_dev,
        seed=seed,
    )
  teacher_cfg, student_cfg = settings_lib.demo_stages(config, data_dir)
  with compile_cache.track() as compiles:  # A rerun loads, never compiles.
    teacher_sum = _train(
        settings_lib.from_config(teacher_cfg),
        os.path.join(workdir, "teacher_run"),
        mesh,
    )
    if teacher_sum.get("preempted"):
      return teacher_sum
    student_sum = _train(
        settings_lib.from_config(student_cfg(teacher_sum["export"])),
        os.path.join(workdir, "student_run"),
        mesh,
    )
  if student_sum.get("preempted"):
    return student_sum
  summary = {
      "teacher_dev": student_sum["teacher_dev"],
      "student_dev": student_sum["dev"],
      "speed": student_sum["speed"],
      "teacher_train_wall_s": teacher_sum["train_wall_s"],
      "student_train_wall_s": student_sum["train_wall_s"],
      "compiles": compiles.summary("train_step"),
  }
  _write_summary(workdir, summary)
  _print_summary("demo: teacher vs student", summary)
  return summary


def train_and_evaluate(
    config: ml_collections.ConfigDict, workdir: str
) -> dict[str, Any]:
  """Runs `config.mode` in `workdir`; returns the run's summary dict."""
  s = settings_lib.from_config(config)
  with distributed.fail_fast():
    return _run_mode(s, config, workdir)


def _run_mode(
    s: settings_lib.Settings, config: ml_collections.ConfigDict, workdir: str
) -> dict[str, Any]:
  distributed.initialize(s.distributed)  # Before anything touches devices.
  cache = s.compile_cache.enabled and distributed.shares_compile_cache()
  if cache != s.compile_cache.enabled and jax.process_index() == 0:
    print(
        "config.compile_cache.enabled is ignored: several CPU processes"
        " cannot share JAX's compilation cache (distributed.py)",
        flush=True,
    )
  sharding.configure_jax(
      compile_cache=cache, compile_cache_dir=s.compile_cache.dir
  )
  mesh = sharding.make_mesh(s.mesh)
  sharding.check_batch_divisible(s.optim.batch_size, mesh)
  sharding.check_batch_divisible(
      s.data.eval_batch_size, mesh, key="config.task.eval_batch_size"
  )
  if s.mode == "demo":
    return _demo(config, workdir, mesh)
  modes = {
      "finetune_teacher": _train,
      "distill": _train,
      "evaluate": _evaluate,
      "predict": _predict,
      "pretrain_distill": _pretrain,
  }
  # Shardings are explicit everywhere (no ambient mesh context needed).
  return modes[s.mode](s, workdir, mesh)
