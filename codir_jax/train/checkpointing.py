"""Orbax checkpoints of the train state and the data-iterator position.

Layout under `<workdir>/checkpoints/<step>/`:
  state/  the TrainState pytree (student + projection params, optimizer
          state, memory banks, rng, step), saved with StandardSave;
  data/   the data iterator's position (JSON), so a resumed run sees exactly
          the batches the uninterrupted run would have seen;
  meta/   JSON: the fingerprint of the settings that must not change across
          a resume (model shapes, bank size, batch size).

The teacher is never checkpointed: it is frozen and reloaded from its path.
Orbax writes each step into a temporary directory and renames it when
complete, so a run killed mid-save leaves the previous checkpoints intact.
"""

from __future__ import annotations

import json
import os
import re
import signal
import threading
from typing import Any

from absl import logging
from etils import epath
import jax
from jax.experimental import multihost_utils
import orbax.checkpoint as ocp

from codir_jax.train.settings import CheckpointSettings


class CheckpointError(RuntimeError):
  """A checkpoint exists but cannot be used; the message names it."""


def make_manager(
    directory: str | os.PathLike[str], settings: CheckpointSettings
) -> ocp.CheckpointManager:
  """A CheckpointManager keeping the latest `settings.keep` checkpoints."""
  if settings.every_steps <= 0 or settings.keep <= 0:
    raise ValueError(
        "config.ckpt.every_steps and config.ckpt.keep must be positive, got"
        f" {settings.every_steps} and {settings.keep}"
    )
  options = ocp.CheckpointManagerOptions(
      max_to_keep=settings.keep,
      save_interval_steps=settings.every_steps,
      enable_async_checkpointing=settings.async_save,
      create=True,
  )
  return ocp.CheckpointManager(
      epath.Path(directory),
      options=options,
      item_names=("state", "data", "meta"),
  )


def save(
    manager: ocp.CheckpointManager,
    step: int,
    state: Any,
    data_state: dict[str, Any],
    meta: dict[str, Any],
    *,
    force: bool = False,
) -> bool:
  """Saves if the interval (or `force`) says so; returns whether it did."""
  return manager.save(
      step,
      args=ocp.args.Composite(
          state=ocp.args.StandardSave(state),
          data=ocp.args.JsonSave(data_state),
          meta=ocp.args.JsonSave(meta),
      ),
      force=force,
  )


def restore_latest(
    manager: ocp.CheckpointManager, abstract_state: Any, meta: dict[str, Any]
) -> tuple[int, Any, dict[str, Any]] | None:
  """Restores the newest checkpoint into `abstract_state`'s shardings.

  Args:
    manager: the run's manager.
    abstract_state: a pytree of `jax.ShapeDtypeStruct` with shardings, the
      target layout (from `jax.eval_shape` of the state initialiser).
    meta: the current run's fingerprint; a checkpoint written with another
      fingerprint is refused rather than silently mis-restored.

  Returns:
    `(step, state, data_state)`, or None when there is no checkpoint.

  Raises:
    CheckpointError: the checkpoint is unreadable or from other settings.
  """
  step = manager.latest_step()
  if step is None:
    return None
  path = epath.Path(manager.directory) / str(step)
  try:
    restored = manager.restore(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state),
            data=ocp.args.JsonRestore(),
            meta=ocp.args.JsonRestore(),
        ),
    )
  except Exception as e:  # pylint: disable=broad-exception-caught
    # The library's error (often a long TensorStore spec) stays chained and
    # is logged in full with --verbosity=1.
    logging.debug("restoring %s failed: %s", path, e)
    files = re.findall(re.escape(str(path)) + r"/[^\s'\",;)\]]+", str(e))
    where = f" ({files[0]})" if files else ""
    raise CheckpointError(
        f"checkpoint {path} exists but could not be restored: step {step}"
        f" is unreadable{where}, {type(e).__name__}. Nothing in the workdir"
        f" was changed. Delete {path} to resume from the previous"
        " checkpoint, or use a new --workdir (full error: --verbosity=1)."
    ) from e
  saved_meta = dict(restored["meta"] or {})
  if json.dumps(saved_meta, sort_keys=True) != json.dumps(meta, sort_keys=True):
    diff = {
        k: (saved_meta.get(k), meta.get(k))
        for k in sorted(set(saved_meta) | set(meta))
        if saved_meta.get(k) != meta.get(k)
    }
    raise CheckpointError(
        f"checkpoint {path} was written with other settings"
        f" (saved vs now: {diff}); use a new --workdir for a new setting"
    )
  return step, restored["state"], dict(restored["data"])


class PreemptionFlag:
  """When the train loop must save and stop: a preemption notice (SIGTERM).

  One process: a Python SIGTERM handler sets an event; `should_stop(step)`
  reads it, so the loop stops before its next step. The loop checks it
  before dispatching a step, and keeps at most `run_ahead.MAX_IN_FLIGHT`
  steps unfinished, so the save follows the signal within that many steps.

  Several processes (`jax.distributed` initialized): JAX's preemption sync
  manager has installed its own SIGTERM handler in every process, and no
  Python handler may replace it. A SIGTERM to any process reaches all of
  them through the coordination service, which fixes one stop step: the
  step after the one the fastest process last reported.
  `should_stop(step)` is true at exactly that step on every process, so
  all save the same step and none waits in a collective for another. Each
  call is a local check under a mutex (~30-60 us measured on CPU, no
  device sync and no network traffic until a notice arrives).
  """

  def __init__(self):
    self._event = threading.Event()
    self._previous = None
    self._synced = jax.distributed.is_initialized() and bool(
        jax.config.jax_enable_preemption_service
    )
    main = threading.current_thread() is threading.main_thread()
    if not self._synced and main:
      self._previous = signal.signal(signal.SIGTERM, self._on_signal)

  def _on_signal(self, signum, frame):  # pylint: disable=unused-argument
    self._event.set()

  def should_stop(self, step: int) -> bool:
    """True when the run must save `step` and stop (same on all processes)."""
    if self._synced:
      return bool(multihost_utils.reached_preemption_sync_point(step))
    return self._event.is_set()

  def close(self) -> None:
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
      self._previous = None
