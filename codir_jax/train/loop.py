"""Set-up of a training run from its config, and the train loop itself.

`build_run` reads the config (the edge) and loads data and models;
`fit` owns the jitted step, checkpoints, logging, evaluation and export.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import time
from typing import Any

from flax import nnx
import jax
from jax.sharding import Mesh
import jax.numpy as jnp
import numpy as np

from codir_jax import models
from codir_jax import sharding
from codir_jax.data import pipeline
from codir_jax.data import tokenize
from codir_jax.losses import memory_bank
from codir_jax.train import builders
from codir_jax.train import checkpointing
from codir_jax.train import evaluation
from codir_jax.train import metrics as metrics_lib
from codir_jax.train import optimizer
from codir_jax.train import state as state_lib
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


@dataclasses.dataclass
class Run:
  """Everything `fit` needs, resolved from the config."""

  workdir: str
  mode: str
  mesh: Mesh
  rules: dict[str, str | None]
  data: task_data.TaskData
  model: nnx.Module  # The model being trained (student, or the teacher).
  teacher_model: nnx.Module | None
  graphs: step_lib.Graphs
  params: dict[str, Any]
  loss: step_lib.LossSettings
  optim: optimizer.OptimSettings
  batch_size: int
  eval_batch_size: int
  seed: int
  buckets: tuple[int, ...]
  bank_all_valid: bool
  ckpt: checkpointing.CheckpointSettings
  log_every: int
  eval_every: int
  tensorboard: bool
  export_name: str

  @property
  def eval_data(self) -> tokenize.TokenizedSplit:
    return self.data.eval


@dataclasses.dataclass
class FitResult:
  steps: int
  wall_s: float
  export_dir: str | None
  final_eval: dict[str, float]
  best_eval: dict[str, float]
  model: nnx.Module
  preempted: bool = False


def _check_choices(config) -> None:
  for key, allowed in _CHOICES.items():
    group, name = key.split(".")
    value = config[group][name]
    if value not in allowed:
      raise ValueError(f"config.{key} = {value!r}; choose from {allowed}")


def _loss_settings(config, *, is_regression, num_student, num_teacher,
                   num_train) -> step_lib.LossSettings:
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
      is_regression=is_regression,
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
  )


def _student(config, teacher_path: str, num_labels: int) -> nnx.Module:
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


def build_run(config, workdir: str, mesh: Mesh) -> Run:
  """Loads data and models for `finetune_teacher` / `distill`."""
  _check_choices(config)
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
    teacher, graphs_kw, params = None, {}, {}
    loss = step_lib.LossSettings(is_regression=spec.is_regression)
    export_name = "teacher"
  else:
    builders.require_task_head(teacher_path, config.loss.kd_weight)
    teacher = builders.load_classifier(
        teacher_path, num_labels=spec.num_labels, dtype=t_dtype,
        seed=config.seed,
    )
    model = _student(config, teacher_path, spec.num_labels)
    loss = _loss_settings(
        config,
        is_regression=spec.is_regression,
        num_student=model.config.num_layers,
        num_teacher=teacher.config.num_layers,
        num_train=len(data.train),
    )
    graphs_kw = {"teacher": nnx.graphdef(teacher)}
    params = {}
    if loss.crd_weight > 0:
      proj_s, proj_t = builders.projection_heads(
          num_layers=model.config.num_layers,
          student_hidden=model.config.hidden_size,
          teacher_hidden=teacher.config.hidden_size,
          proj_dim=config.loss.proj_dim,
          per_layer=config.loss.combine == "per_layer",
          seed=config.seed + 1,
      )
      graphs_kw.update(proj_s=nnx.graphdef(proj_s),
                       proj_t=nnx.graphdef(proj_t))
      params.update(proj_s=nnx.state(proj_s), proj_t=nnx.state(proj_t))
    export_name = "student"
  params["student"] = nnx.state(model)
  o = config.optim
  steps_per_epoch = math.ceil(len(data.train) / o.batch_size)
  total = int(o.num_steps) or int(math.ceil(o.num_epochs * steps_per_epoch))
  return Run(
      workdir=workdir,
      mode=config.mode,
      mesh=mesh,
      rules={k: v for k, v in config.sharding_rules},
      data=data,
      model=model,
      teacher_model=teacher,
      graphs=step_lib.Graphs(student=nnx.graphdef(model), **graphs_kw),
      params=params,
      loss=loss,
      optim=optimizer.OptimSettings(
          lr=o.lr, weight_decay=o.weight_decay, b1=o.b1, b2=o.b2, eps=o.eps,
          warmup_frac=o.warmup_frac, clip_norm=o.clip_norm,
          total_steps=total,
      ),
      batch_size=int(o.batch_size),
      eval_batch_size=int(config.task.eval_batch_size),
      seed=int(config.seed),
      buckets=tokenize.make_buckets(config.task.max_len,
                                    config.task.min_bucket),
      bank_all_valid=bool(config.bank.all_valid_at_init),
      ckpt=checkpointing.CheckpointSettings(
          every_steps=config.ckpt.every_steps, keep=config.ckpt.keep,
          async_save=config.ckpt.async_save,
      ),
      log_every=int(config.log.every_steps),
      eval_every=int(config.log.eval_every_steps),
      tensorboard=bool(config.log.tensorboard),
      export_name=export_name,
  )


def _fingerprint(run: Run) -> dict[str, Any]:
  """Settings a checkpoint must agree with to be resumed."""
  shapes = jax.tree.map(lambda x: list(x.shape), jax.tree.leaves(run.params))
  return {
      "mode": run.mode,
      "task": run.data.spec.name,
      "num_train": len(run.data.train),
      "batch_size": run.batch_size,
      "total_steps": run.optim.total_steps,
      "param_shapes": str(shapes),
      "uses_bank": run.loss.uses_bank,
  }


def _init_fn(run: Run, tx):
  n_data = sharding.axis_size(run.mesh, sharding.DATA_AXIS)
  train = run.data.train
  labels = np.asarray(train.labels)

  def init(params, rng):
    bank = {}
    if run.loss.uses_bank:
      dim = params["proj_s"]["kernel"].shape[-1]
      for i, side in enumerate(("student", "teacher")):
        bank[side] = memory_bank.init(
            jax.random.fold_in(rng, 1000 + i), num_slots=len(train), dim=dim,
            labels=jnp.asarray(labels), all_valid=run.bank_all_valid,
            pad_to_multiple=n_data,
        )
    return state_lib.create(params, tx, bank, rng)

  return init


def _shardings(run: Run, abstract: state_lib.TrainState):
  specs = state_lib.state_specs(abstract, run.mesh, run.rules, bank_specs={})
  shard = sharding.to_shardings(run.mesh, specs)
  if run.loss.uses_bank:
    bank = memory_bank.shardings(run.mesh)
    shard = shard.replace(bank={"student": bank, "teacher": bank})
  return shard


def _export(run: Run, params: Any, name: str) -> str | None:
  path = os.path.join(run.workdir, name)
  model = nnx.merge(run.graphs.student, jax.device_get(params["student"]))
  if jax.process_index() == 0:
    models.save_pretrained(model, path, tokenizer=run.data.tokenizer)
  return path


class _MetricLog:
  """Buffers per-step device metrics; checks them for NaN when flushed."""

  def __init__(self, writer: metrics_lib.MetricWriter, manager):
    self.writer, self.manager, self.pending = writer, manager, []

  def add(self, m) -> None:
    self.pending.append(m)

  def flush(self, step: int, *, report: bool) -> None:
    if not self.pending:
      return
    means = metrics_lib.mean_of(jax.device_get(self.pending))
    self.pending = []
    if not all(math.isfinite(means[k]) for k in ("loss", "l2_grads")):
      raise FloatingPointError(
          f"non-finite training loss/gradient by step {step}: {means}."
          f" Stopped without saving; the last good checkpoint is step"
          f" {self.manager.latest_step()} in {self.manager.directory}"
          " (lower config.optim.lr or use float32)."
      )
    if report:
      self.writer.write(step, "train", means)
      self.writer.progress(step, means)


def fit(run: Run, on_ready=None) -> FitResult:
  """Trains `run.model`; returns final/best dev metrics and the export.

  Args:
    run: from `build_run`.
    on_ready: called once the state is initialised or restored, before the
      first step (the trainer writes config.json then).
  """
  mesh, seed = run.mesh, run.seed
  n_proc = jax.process_count()
  it = pipeline.BatchIterator(
      run.data.train, batch_size=run.batch_size // n_proc, shuffle=True,
      seed=seed, buckets=run.buckets, process_index=jax.process_index(),
      process_count=n_proc,
  )
  tx = optimizer.make_optimizer(run.optim)
  init = _init_fn(run, tx)
  rng0 = jax.random.PRNGKey(seed)
  abstract = jax.eval_shape(init, run.params, rng0)
  state_sh = _shardings(run, abstract)
  manager = checkpointing.make_manager(
      os.path.join(os.path.abspath(run.workdir), "checkpoints"), run.ckpt
  )
  meta = _fingerprint(run)
  target = jax.tree.map(
      lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
      abstract, state_sh,
  )
  restored = checkpointing.restore_latest(manager, target, meta)
  best: dict[str, float] = {}
  if restored is None:
    params = jax.device_put(run.params, state_sh.params)
    state = jax.jit(init, out_shardings=state_sh)(params, rng0)
  else:
    step0, state, data_state = restored
    it.set_state(data_state["iterator"])
    best = dict(data_state.get("best") or {})
    print(f"Resumed from step {step0} in {manager.directory}", flush=True)

  if on_ready is not None:
    on_ready()
  repl = sharding.replicated(mesh)
  teacher_params = None
  if run.teacher_model is not None:
    teacher_params = jax.device_put(nnx.state(run.teacher_model), repl)
  train_step = jax.jit(
      functools.partial(step_lib.train_step, graphs=run.graphs, tx=tx,
                        cfg=run.loss, mesh=mesh),
      in_shardings=(state_sh, sharding.batch_sharding(mesh), repl),
      out_shardings=(state_sh, repl),
      donate_argnums=(0,),
  )

  total = run.optim.total_steps
  writer = metrics_lib.MetricWriter(
      run.workdir, total_steps=total, enabled=jax.process_index() == 0,
      tensorboard=run.tensorboard,
  )
  log = _MetricLog(writer, manager)
  flag = checkpointing.PreemptionFlag(manager)
  step = int(jax.device_get(state.step))
  writer.start(step)
  eval_bs = run.eval_batch_size

  def evaluate(params):
    return evaluation.evaluate_params(
        run.graphs.student, params["student"], run.eval_data, mesh=mesh,
        batch_size=eval_bs,
    )

  def save(force: bool) -> None:
    log.flush(step, report=False)
    checkpointing.save(
        manager, step, state, {"iterator": it.get_state(), "best": best},
        meta, force=force,
    )

  t0, preempted = time.perf_counter(), False
  try:
    while step < total:
      if flag.should_stop(step):
        save(force=True)
        preempted = True
        print(f"Preempted: saved step {step}; rerun to resume.", flush=True)
        break
      batch = evaluation.put_batch(next(it), mesh)
      state, m = train_step(state, batch, teacher_params)
      step += 1
      log.add(m)
      if step % run.log_every == 0 or step == total:
        log.flush(step, report=True)
      if run.eval_every and step % run.eval_every == 0 and step < total:
        scores = evaluate(state.params)
        writer.write(step, "eval", scores)
        print(f"  eval @ {step}: {scores}", flush=True)
        if scores["score"] > best.get("score", -math.inf):
          best = dict(scores, step=step)
          _export(run, state.params, "best")
      if step % run.ckpt.every_steps == 0 or step == total:
        save(force=step == total)
  finally:
    manager.wait_until_finished()
    flag.close()
  wall = time.perf_counter() - t0
  if preempted:
    writer.close()
    return FitResult(step, wall, None, {}, best, run.model, preempted=True)
  final = evaluate(state.params)
  writer.write(step, "eval", final)
  writer.close()
  if final["score"] > best.get("score", -math.inf):
    best = dict(final, step=step)
    _export(run, state.params, "best")
  export_dir = _export(run, state.params, run.export_name)
  model = nnx.merge(run.graphs.student, jax.device_get(state.params["student"]))
  manager.close()
  return FitResult(step, wall, export_dir, final, best, model)
