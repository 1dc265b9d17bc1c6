"""The train loop: state set-up, restore, steps, logging, eval, export.

A `run.Run` (built by `glue_run.build_run` for fine-tuning and by
`pretrain_run.build_run` for CoDIR-Pre) says what to train and how to feed
and evaluate it; `fit` owns the jitted step, checkpoints, metrics and
exports.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import time
from typing import Any, Callable

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np

from codir_jax import distributed
from codir_jax import models
from codir_jax import sharding
from codir_jax.losses import memory_bank
from codir_jax.train import accumulate
from codir_jax.train import checkpointing
from codir_jax.train import metrics as metrics_lib
from codir_jax.train import optimizer
from codir_jax.train import run_ahead
from codir_jax.train import state as state_lib
from codir_jax.train import step as step_lib
from codir_jax.train.run import Run


@dataclasses.dataclass
class FitResult:
  steps: int
  wall_s: float
  export_dir: str | None
  final_eval: dict[str, float]
  best_eval: dict[str, float]
  model: nnx.Module
  preempted: bool = False


def _fingerprint(run: Run) -> dict[str, Any]:
  """Settings a checkpoint must agree with to be resumed."""
  shapes = jax.tree.map(lambda x: list(x.shape), jax.tree.leaves(run.params))
  return dict(
      run.fingerprint,
      mode=run.mode,
      batch_size=run.batch_size,
      total_steps=run.optim.total_steps,
      param_shapes=str(shapes),
      uses_bank=run.loss.uses_bank,
      bank_slots=run.bank_slots,
  )


def _init_fn(run: Run, tx):
  n_data = sharding.axis_size(run.mesh, sharding.DATA_AXIS)
  labels = None if run.bank_labels is None else np.asarray(run.bank_labels)

  def init(params, rng):
    bank = {}
    if run.loss.uses_bank:
      dim = params["proj_s"]["kernel"].shape[-1]
      for i, side in enumerate(("student", "teacher")):
        bank[side] = memory_bank.init(
            jax.random.fold_in(rng, 1000 + i),
            num_slots=run.bank_slots,
            dim=dim,
            labels=None if labels is None else jnp.asarray(labels),
            all_valid=run.bank_all_valid,
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
  # Every process gathers (the parameters may be split across processes);
  # process 0 writes.
  model = nnx.merge(run.graphs.student, distributed.to_host(params["student"]))
  if jax.process_index() == 0:
    models.save_pretrained(model, path, tokenizer=run.tokenizer)
  return path


class _MetricLog:
  """Buffers per-step device metrics; the NaN/inf tripwire checks them.

  Every checkpoint save flushes first, so no checkpoint is written from a
  step whose loss, gradients, update or parameters were non-finite (the
  step's fused 'finite' flag), or whose update outgrew the parameters
  (`DIVERGED_UPDATE_RATIO`). The loss of step j is computed on the
  parameters of step j - 1: when it is non-finite, replaying checkpoint
  j - 1 would diverge again whatever the learning rate, so that checkpoint
  is moved to `<workdir>/nonfinite/` and the error names the one before.
  """

  def __init__(self, writer: metrics_lib.MetricWriter, manager, workdir):
    self.writer, self.manager, self.pending = writer, manager, []
    self.workdir = workdir

  def add(self, m) -> None:
    self.pending.append(m)

  def flush(self, step: int) -> None:
    """Checks and logs the buffered steps (the window ending at `step`)."""
    if not self.pending:
      return
    history = jax.device_get(self.pending)
    self.pending = []
    for i, m in enumerate(history):
      row = metrics_lib.mean_of([m])
      if not _finite(row) or _diverged(row):
        self._trip(step - len(history) + 1 + i, row)
    means = metrics_lib.mean_of(history)
    self.writer.write(step, "train", means)
    self.writer.progress(step, means)

  def _trip(self, step: int, row: dict[str, float]) -> None:
    """Moves aside the checkpoints that replay the divergence; raises."""
    self.manager.wait_until_finished()
    forward_bad = not all(math.isfinite(row[k]) for k in ("loss", "l2_grads"))
    first_bad = step - 1 if forward_bad else step
    bad = [s for s in self.manager.all_steps() if s >= first_bad]
    aside = os.path.join(os.path.abspath(self.workdir), "nonfinite")
    if jax.process_index() == 0:
      os.makedirs(aside, exist_ok=True)
      for s in bad:
        os.replace(
            os.path.join(self.manager.directory, str(s)),
            os.path.join(aside, f"checkpoint_{s}"),
        )
      record = {"step": step, "metrics": row, "moved_checkpoints": bad}
      with open(os.path.join(aside, f"{step}.json"), "w") as f:
        json.dump(record, f, indent=2, sort_keys=True)
    self.manager.reload()
    good = self.manager.latest_step()
    moved = (
        f" Checkpoint(s) {bad}, whose next step diverged, were moved to"
        f" {aside}."
        if bad
        else ""
    )
    resume = (
        f"the last finite checkpoint is step {good} in"
        f" {self.manager.directory}; rerun with a lower config.optim.lr (or"
        " float32) to resume from it"
        if good is not None
        else "no finite checkpoint is left; a rerun starts from step 0"
    )
    what = (
        "diverged (update norm"
        f" {row['l2_updates']:.3g} >= {DIVERGED_UPDATE_RATIO} x parameter"
        f" norm {row['l2_params']:.3g})"
        if _finite(row)
        else "non-finite loss/gradients/parameters"
    )
    raise FloatingPointError(
        f"{what} at step {step}: {row}."
        f" Nothing of step {step} was saved.{moved} Stopped: {resume}."
    )


# A step whose update is at least this fraction of the norm of the
# parameters it produced has diverged (||dθ|| >= ||θ_old|| implies it):
# AdamW at a sane lr moves the weights by a small fraction of their norm
# (MiniLM-L6 fine-tuning at lr 5e-5: ~1e-4; the tiny test models at 1e-3:
# ~1e-2). Such parameters are finite but ruined: every later forward of
# them diverges whatever the lr, so they are never checkpointed.
DIVERGED_UPDATE_RATIO = 0.5


def _finite(row: dict[str, float]) -> bool:
  keys = ("loss", "l2_grads")
  return row.get("finite", 1.0) == 1.0 and all(
      math.isfinite(row[k]) for k in keys
  )


def _diverged(row: dict[str, float]) -> bool:
  """The update outgrew the parameters (both norms are logged every step)."""
  if "l2_updates" not in row:
    return False
  return row["l2_updates"] >= DIVERGED_UPDATE_RATIO * row["l2_params"]


@dataclasses.dataclass
class Compiled:
  """The pieces of a run on devices: initial state, step, teacher."""

  tx: Any
  abstract: Any  # TrainState of ShapeDtypeStructs with shardings.
  init: Callable[[], state_lib.TrainState]  # Fresh, sharded state.
  train_step: Callable[..., Any]  # (state, batch, teacher) -> (state, m).
  teacher_params: Any


def compile_run(run: Run) -> Compiled:
  """Optimizer, state shardings, the jitted init and train step."""
  mesh = run.mesh
  tx = optimizer.make_optimizer(run.optim)
  init = _init_fn(run, tx)
  rng0 = jax.random.PRNGKey(run.seed)
  abstract = jax.eval_shape(init, run.params, rng0)
  state_sh = _shardings(run, abstract)
  target = jax.tree.map(
      lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
      abstract,
      state_sh,
  )

  def fresh():
    params = jax.device_put(run.params, state_sh.params)
    return jax.jit(init, out_shardings=state_sh)(params, rng0)

  repl = sharding.replicated(mesh)
  teacher_params, teacher_sh = None, repl
  if run.teacher_model is not None:
    teacher = nnx.state(run.teacher_model)
    if run.scale.shard_teacher:  # FSDP over 'data' (state.teacher_specs).
      specs = state_lib.teacher_specs(teacher, mesh, run.rules)
      teacher_sh = sharding.to_shardings(mesh, specs)
    teacher_params = jax.device_put(teacher, teacher_sh)
  accum = run.scale.grad_accum_steps
  accumulate.check_split(run.batch_size, accum, mesh)
  train_step = jax.jit(
      functools.partial(
          step_lib.train_step,
          graphs=run.graphs,
          tx=tx,
          obj=run.objective,
          mesh=mesh,
          remat=run.scale.remat,
          accum_steps=accum,
      ),
      in_shardings=(state_sh, sharding.batch_sharding(mesh), teacher_sh),
      out_shardings=(state_sh, repl),
      donate_argnums=(0,),
  )
  return Compiled(tx, target, fresh, train_step, teacher_params)


def fit(run: Run, on_ready=None) -> FitResult:
  """Trains `run.model`; returns final/best dev metrics and the export.

  Args:
    run: from `glue_run.build_run` or `pretrain_run.build_run`.
    on_ready: called once the state is initialised or restored, before the
      first step (the trainer writes config.json then).
  """
  compiled = compile_run(run)
  manager = checkpointing.make_manager(
      os.path.join(os.path.abspath(run.workdir), "checkpoints"), run.ckpt
  )
  try:
    return _fit(run, compiled, manager, on_ready)
  finally:
    manager.close()


def _fit(run: Run, compiled: Compiled, manager, on_ready) -> FitResult:
  """`fit` once the checkpoint manager exists (the caller closes it)."""
  mesh = run.mesh
  it = run.make_iterator()
  meta = _fingerprint(run)
  restored = checkpointing.restore_latest(manager, compiled.abstract, meta)
  best: dict[str, float] = {}
  since_best = 0  # Evaluations since the best score (early stopping).
  if restored is None:
    state = compiled.init()
  else:
    step0, state, data_state = restored
    it.set_state(data_state["iterator"])
    best = dict(data_state.get("best") or {})
    since_best = int(data_state.get("since_best", 0))
    print(f"Resumed from step {step0} in {manager.directory}", flush=True)
  if on_ready is not None:
    on_ready()
  train_step, teacher_params = compiled.train_step, compiled.teacher_params

  total = run.optim.total_steps
  step = int(jax.device_get(state.step))
  writer = metrics_lib.MetricWriter(
      run.workdir,
      total_steps=total,
      enabled=jax.process_index() == 0,
      tensorboard=run.tensorboard,
      resume_step=step,
  )
  log = _MetricLog(writer, manager, run.workdir)
  flag = checkpointing.PreemptionFlag()
  window = run_ahead.StepWindow()  # Bounds the steps queued on the device.
  writer.start(step)
  saved = step if restored is not None else None  # Newest checkpoint.

  def evaluate(params):
    return run.evaluate(run.graphs.student, params["student"])

  def save(force: bool) -> None:
    nonlocal saved
    if step == saved:  # E.g. a preemption right after a periodic save.
      return
    log.flush(step)
    if checkpointing.save(
        manager,
        step,
        state,
        {"iterator": it.get_state(), "best": best, "since_best": since_best},
        meta,
        force=force,
    ):
      saved = step

  def patience_spent() -> bool:
    return bool(run.patience) and since_best >= run.patience

  t0, preempted, last_eval = time.perf_counter(), False, None
  try:
    while step < total and not patience_spent():
      # At most MAX_IN_FLIGHT steps queued: a stop is acted on within them.
      window.wait_for_room()
      # Every process stops at the same step (PreemptionFlag).
      if flag.should_stop(step):
        save(force=True)
        preempted = True
        break
      batch = sharding.put_batch(next(it), mesh)
      state, m = train_step(state, batch, teacher_params)
      window.dispatched(m)  # Not `state`: the next step donates it.
      step += 1
      log.add(m)
      if step % run.log_every == 0 or step == total:
        log.flush(step)
      if run.eval_every and step % run.eval_every == 0 and step < total:
        scores = evaluate(state.params)
        last_eval = (step, scores)
        writer.write(step, "eval", scores)
        print(f"  eval @ {step}: {scores}", flush=True)
        if scores["score"] > best.get("score", -math.inf):
          best = dict(scores, step=step)
          since_best = 0
          _export(run, state.params, "best")
        else:
          since_best += 1
        if patience_spent():
          print(
              f"Early stop at step {step}: no better dev score in"
              f" {since_best} evaluations; best {best}",
              flush=True,
          )
      if step % run.ckpt.every_steps == 0 or step == total or patience_spent():
        save(force=step == total or patience_spent())
  finally:
    manager.wait_until_finished()
    flag.close()
  wall = time.perf_counter() - t0
  if preempted:
    writer.close()
    print(f"Preempted at step {step}; rerun to resume.", flush=True)
    return FitResult(step, wall, None, {}, best, run.model, preempted=True)
  if last_eval is not None and last_eval[0] == step:
    final = last_eval[1]  # Stopped early right after evaluating.
  else:
    final = evaluate(state.params)
    writer.write(step, "eval", final)
  writer.close()
  if final["score"] > best.get("score", -math.inf):
    best = dict(final, step=step)
    _export(run, state.params, "best")
  export_dir = _export(run, state.params, run.export_name)
  model = nnx.merge(
      run.graphs.student, distributed.to_host(state.params["student"])
  )
  return FitResult(step, wall, export_dir, final, best, model)
