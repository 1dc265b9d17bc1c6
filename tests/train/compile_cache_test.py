"""The persistent compilation cache: on, off, where, and a demo rerun."""

import contextlib
import json
import os

import jax
from jax.experimental.compilation_cache import compilation_cache as jax_cc
import jax.numpy as jnp
import pytest

from codir_jax import compile_cache
from codir_jax import sharding
from codir_jax.train import trainer
from tests.train import assets

_FLAGS = (
    "jax_compilation_cache_dir",
    "jax_enable_compilation_cache",
    "jax_persistent_cache_min_compile_time_secs",
)


@contextlib.contextmanager
def _cache_flags_restored():
  """Later tests keep the suite's cache settings (tests/conftest.py)."""
  old = {k: getattr(jax.config, k) for k in _FLAGS}
  try:
    yield
  finally:
    for k, v in old.items():
      jax.config.update(k, v)
    jax_cc.reset_cache()


@pytest.fixture(autouse=True)
def _restore_jax_cache_flags():
  with _cache_flags_restored():
    yield


def _compile_probe(x):
  """A new jit object each call, so each call asks for a compile."""

  def probe(v):
    return jnp.tanh(v @ v.T).sum()

  return jax.jit(probe)(x)


def test_on_stores_a_program_and_a_new_process_style_request_loads_it(
    tmp_path,
):
  cache = str(tmp_path / "cache")
  sharding.configure_jax(compile_cache=True, compile_cache_dir=cache)
  x = jnp.ones((8, 8))
  with compile_cache.track() as first:
    _compile_probe(x)
  with compile_cache.track() as second:
    _compile_probe(x)
  assert (first.compiled["jit(probe)"], first.loaded["jit(probe)"]) == (1, 0)
  assert (second.compiled["jit(probe)"], second.loaded["jit(probe)"]) == (0, 1)
  assert any(n.startswith("jit_probe-") for n in os.listdir(cache))


def test_off_compiles_every_time_and_writes_nothing(tmp_path):
  cache = tmp_path / "cache"
  sharding.configure_jax(compile_cache=False, compile_cache_dir=str(cache))
  x = jnp.ones((8, 8))
  with compile_cache.track() as log:
    _compile_probe(x)
    _compile_probe(x)
  assert (log.compiled["jit(probe)"], log.loaded["jit(probe)"]) == (2, 0)
  assert not cache.exists() or not os.listdir(cache)


def test_empty_dir_keeps_jax_dir_else_the_user_cache(tmp_path, monkeypatch):
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
  default = str(tmp_path / "xdg" / "codir_jax" / "jax_cache")
  assert compile_cache.resolve_dir("", None) == default
  assert compile_cache.resolve_dir("", "/j") == "/j"
  assert compile_cache.resolve_dir("/c", "/j") == "/c"
  monkeypatch.setenv("HOME", str(tmp_path / "home"))
  assert compile_cache.resolve_dir("~/c", None) == str(tmp_path / "home/c")
  # The suite's own runs ('' dir) stay in its temporary directory.
  sharding.configure_jax(compile_cache=True)
  suite = os.environ["JAX_COMPILATION_CACHE_DIR"]
  assert jax.config.jax_compilation_cache_dir == suite != default


@pytest.fixture(scope="module")
def demo_twice(tiny_dirs, tmp_path_factory):
  """Two demo runs in new workdirs, one cache: (first, second, root)."""
  root = tmp_path_factory.mktemp("demo")
  teacher, _ = tiny_dirs
  config = assets.tiny_config(
      teacher,
      "",  # The demo writes its generated task.
      "mode=demo,variant=kd",  # KD: the smallest distillation step.
      demo__num_train=48,
      demo__num_dev=16,
      demo__teacher_steps=2,
      optim__num_steps=2,
      compile_cache__dir=str(root / "cache"),
  )
  with _cache_flags_restored():
    first = trainer.train_and_evaluate(config, str(root / "a"))
    second = trainer.train_and_evaluate(config, str(root / "b"))
  return first, second, root


@pytest.mark.slow  # Compiles two train steps once (~40 s on 2 cores).
def test_second_demo_run_compiles_nothing(demo_twice):
  first, second, _ = demo_twice
  # Teacher fine-tuning and distillation: two train steps.
  assert first["compiles"]["train_step_compiled"] == 2
  assert first["compiles"]["train_step_cache_hits"] == 0
  assert second["compiles"]["train_step_cache_hits"] == 2
  assert second["compiles"]["compiled"] == 0, second["compiles"]
  assert second["student_dev"] == first["student_dev"]


@pytest.mark.slow  # Shares the demo runs above.
def test_demo_teacher_stage_fine_tunes_and_exports_a_teacher(demo_twice):
  """The demo's first stage is a plain run of mode finetune_teacher."""
  _, _, root = demo_twice
  workdir = root / "a" / "teacher_run"
  with open(workdir / "summary.json") as f:
    summary = json.load(f)
  assert summary["mode"] == "finetune_teacher" and summary["steps"] == 2
  assert summary["export"] == str(workdir / "teacher")
  with open(workdir / "metrics.jsonl") as f:
    rows = [r for r in map(json.loads, f) if r["split"] == "train"]
  assert [r["step"] for r in rows] == [2]
  assert set(rows[0]) >= {"loss", "task", "accuracy"}
  assert not {"kd", "pkd", "crd"} & set(rows[0]), rows[0]
