"""The train loop queues at most MAX_IN_FLIGHT steps on the device.

The tiny run's step is made slow (its program also runs ~50 matmuls; CPU
dispatch is asynchronous, except for programs with host callbacks), and
neither logging, evaluation nor checkpoints read the device before the
end, so without the bound the host would queue every step at once.
"""

import dataclasses
import os
import signal
import threading

import jax
import jax.numpy as jnp

from codir_jax.train import loop
from codir_jax.train import run_ahead
from codir_jax.train import trainer
from tests.train import assets

STEPS = 16
STOP_AFTER = 6  # SIGTERM once the device has finished this step.
BUSY_MATMULS = 50  # ~30 ms at 256x256 on one CPU core.


def _busy(seed: jax.Array) -> jax.Array:
  """Device work that XLA cannot fold away (it depends on `seed`)."""
  a = jnp.full((256, 256), 1.0 / 256, jnp.float32) + seed
  return jax.lax.fori_loop(0, BUSY_MATMULS, lambda _, x: jnp.tanh(a @ x), a)


def _ready(tree) -> bool:
  return all(x.is_ready() for x in jax.tree.leaves(tree))


def _terminate_when_ready(metrics) -> None:
  jax.block_until_ready(metrics)
  os.kill(os.getpid(), signal.SIGTERM)


class _Recorder:
  """A slow train step that records the run-ahead at each dispatch."""

  def __init__(self, compiled: loop.Compiled):
    step = compiled.train_step

    def slow_step(state, batch, teacher_params):
      state, m = step(state, batch, teacher_params)
      # One program: the state and metrics are ready when the busy work is.
      state, m, _ = jax.lax.optimization_barrier((state, m, _busy(state.step)))
      return state, m

    # Optimisation level 0 halves the compile; the numbers are not checked.
    self.step = jax.jit(
        slow_step,
        donate_argnums=(0,),
        compiler_options={"xla_backend_optimization_level": 0},
    )
    self.outputs = []  # Each dispatched step's metrics.
    self.unfinished = []  # Per dispatch: earlier steps not yet finished.

  def __call__(self, state, batch, teacher_params):
    self.unfinished.append(sum(not _ready(m) for m in self.outputs))
    state, m = self.step(state, batch, teacher_params)
    self.outputs.append(m)
    if len(self.outputs) == STOP_AFTER:
      threading.Thread(
          target=_terminate_when_ready, args=(m,), daemon=True
      ).start()
    return state, m


def test_queued_steps_and_preemption_latency_are_bounded(
    tmp_path, tiny_dirs, monkeypatch
):
  compile_run, recorders = loop.compile_run, []

  def recording(run):
    compiled = compile_run(run)
    recorders.append(_Recorder(compiled))
    return dataclasses.replace(compiled, train_step=recorders[-1])

  monkeypatch.setattr(loop, "compile_run", recording)
  config = assets.tiny_config(  # The teacher's step compiles fastest.
      *tiny_dirs,
      "mode=finetune_teacher",
      optim__num_steps=STEPS,
      log__every_steps=STEPS,
      ckpt__every_steps=STEPS,
  )
  workdir = str(tmp_path / "run")
  # The run's PreemptionFlag replaces this handler and puts it back: a
  # SIGTERM that came after the run would be ignored, not end pytest.
  previous = signal.signal(signal.SIGTERM, lambda *_: None)
  try:
    summary = trainer.train_and_evaluate(config, workdir)
  finally:
    signal.signal(signal.SIGTERM, previous)
  (rec,) = recorders
  bound = run_ahead.MAX_IN_FLIGHT
  # The device was the bottleneck (a step was queued behind another) ...
  assert max(rec.unfinished) >= 1, rec.unfinished
  # ... yet with the new step at most `bound` were unfinished.
  assert max(rec.unfinished) <= bound - 1, rec.unfinished
  # SIGTERM once step STOP_AFTER finished: at most `bound` more steps ran
  # (those already queued), the last of them was saved, and the run stopped.
  assert summary.get("preempted"), summary
  stop = summary["steps"]
  assert STOP_AFTER <= stop <= STOP_AFTER + bound, (stop, rec.unfinished)
  assert len(rec.outputs) == stop
  saved = os.listdir(os.path.join(workdir, "checkpoints"))
  assert str(stop) in saved, saved
