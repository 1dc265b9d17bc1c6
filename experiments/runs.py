"""Running many trainer runs from a script: resume, skip, cache, check.

Shared by experiments/ablation.py and experiments/evidence.py (scripts, not
part of codir_jax). Also: the recipe of a config and its hash, the code
version a run came from, and claim files that let several worker
processes share a list of runs. A run is a config plus its own workdir:

  * `run_one` runs it, or reads its `summary.json` back when it finished
    (with the same config), or resumes it from its own checkpoint when it
    was cut off; finished runs' checkpoints are deleted (the exports stay).
  * `compilation_cache` turns on JAX's persistent compilation cache, so
    seeds of a variant load their compiled steps from disk.
  * `check_teacher_reload` guards against distilling from a teacher whose
    HF export did not round-trip.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import platform
import shutil
import subprocess
from typing import Any, Iterator, Sequence

import ml_collections

from codir_jax.train import recipe as recipe_lib
from codir_jax.train.recipe import flatten


def config_dict(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The config as plain JSON values (what trainer writes to config.json)."""
  return json.loads(config.to_json_best_effort(sort_keys=True))


def config_differences(
    stored: dict[str, Any], new: dict[str, Any]
) -> list[str]:
  """Flat keys whose values differ between a stored config and a new one.

  A key that exists only in `new` and holds its configs/base.py default is
  not a difference: it was added to the code after the run was made and
  leaves the recipe as it was (e.g. a new feature, off by default). Nor is
  a key that exists only in `new` and changes no result, whatever its
  value (`recipe.same_results`, e.g. teacher.cache_outputs).
  """
  from configs import base  # pylint: disable=g-import-not-at-top

  defaults = flatten(config_dict(base.get_base_config()))
  old, cur = flatten(stored), flatten(new)
  diff = []
  for key in sorted(set(old) | set(cur)):
    added = key not in old and key in defaults
    if added and (cur[key] == defaults[key] or recipe_lib.same_results(key)):
      continue
    if old.get(key, KeyError) != cur.get(key, KeyError):
      diff.append(key)
  return diff


def finished_summary(
    config: ml_collections.ConfigDict, workdir: str
) -> dict[str, Any] | None:
  """The summary of a finished run of `config` in `workdir`, else None.

  Raises:
    ValueError: `workdir` holds a finished run with another config (see
      `config_differences`).
  """
  path = os.path.join(workdir, "summary.json")
  if not os.path.exists(path):
    return None
  with open(os.path.join(workdir, "config.json"), encoding="utf-8") as f:
    stored = json.load(f)
  diff = config_differences(stored, config_dict(config))
  if diff:
    raise ValueError(
        f"{workdir} holds a finished run with another config (differs in"
        f" {diff}); use a new --out or delete that run"
    )
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def run_one(
    config: ml_collections.ConfigDict,
    workdir: str,
    *,
    keep_checkpoints: bool = False,
) -> dict:
  """Runs `config` in `workdir`, or reads its summary if it finished.

  A finished run's `checkpoints/` are deleted unless `keep_checkpoints`
  (they only serve to resume it; the exports stay): ~100 MB per MiniLM run.

  Returns:
    The trainer's summary plus `wall_s` (the run's own wall time, from the
    summary) and `resumed` (True if it was read back).

  Raises:
    ValueError: `workdir` holds a finished run with a different config.
    RuntimeError: the run was preempted (rerun the script to resume it).
  """
  summary = finished_summary(config, workdir)
  resumed = summary is not None
  if summary is None:
    # Imported here so `--help` and the table functions stay light.
    from codir_jax.train import trainer  # pylint: disable=g-import-not-at-top

    summary = trainer.train_and_evaluate(config, workdir)
    if not keep_checkpoints and not summary.get("preempted"):
      shutil.rmtree(os.path.join(workdir, "checkpoints"), ignore_errors=True)
  if summary.get("preempted"):
    raise RuntimeError(f"run in {workdir} was preempted; rerun to resume")
  return {
      **summary,
      "wall_s": float(summary["total_wall_s"]),
      "resumed": resumed,
  }


def check_teacher_reload(
    teacher_dev: dict[str, float], summary: dict, workdir: str
) -> None:
  """The distilled-from teacher must score what it scored when exported.

  A student run re-evaluates its teacher (`teacher_dev`) after loading the
  export from disk; any difference means the HF round trip lost weights,
  so the students learned from another model.
  """
  reloaded = summary.get("teacher_dev")
  if reloaded is None:
    return
  bad = {
      k: (v, reloaded.get(k))
      for k, v in teacher_dev.items()
      if reloaded.get(k) is None or abs(reloaded[k] - v) > 1e-6
  }
  if bad:
    raise RuntimeError(
        f"{workdir}: the reloaded teacher scores {reloaded}, but the"
        f" fine-tuned teacher scored {teacher_dev} (metric: (exported,"
        " reloaded) = " + str(bad) + "); the teacher export does not"
        " round-trip, so the students would learn from another model"
    )


@contextlib.contextmanager
def compilation_cache(path: str) -> Iterator[None]:
  """Persistent XLA cache in `path` ('' = off), restored on exit.

  Seeds of a variant share every shape, so all but the first load their
  compiled steps from disk. On exit the process-wide JAX settings return to
  what they were (this matters when a script's `main` runs inside a test
  session).
  """
  if not path:
    yield
    return
  # pylint: disable=g-import-not-at-top
  import jax
  from jax.experimental.compilation_cache import compilation_cache as cc
  # pylint: enable=g-import-not-at-top

  keys = (
      "jax_compilation_cache_dir",
      "jax_persistent_cache_min_compile_time_secs",
  )
  old = {k: getattr(jax.config, k) for k in keys}
  jax.config.update("jax_compilation_cache_dir", path)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  cc.reset_cache()
  try:
    yield
  finally:
    for k, v in old.items():
      jax.config.update(k, v)
    cc.reset_cache()


def cores() -> int:
  """CPUs this process may run on (its affinity: taskset, cgroups)."""
  return len(os.sched_getaffinity(0))


def cpu_name() -> str:
  """CPU model and ISA (AVX-512 or AVX2), for the compute line."""
  model, flags = "", ""
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
      for line in f:
        if line.startswith("model name") and not model:
          model = line.split(":", 1)[1].strip()
        if line.startswith("flags"):
          flags = line
  except OSError:
    pass
  isa = (
      "AVX-512"
      if "avx512f" in flags
      else ("AVX2" if "avx2" in flags else "no AVX2")
  )
  return f"{model or platform.machine()}, {isa}"


def recipe(
    config: ml_collections.ConfigDict, place_keys: Sequence[str] = ()
) -> dict[str, Any]:
  """The flat config without the keys that name places (paths)."""
  flat = flatten(config_dict(config))
  for k in place_keys:
    flat.pop(k, None)
  return flat


def config_hash(
    config: ml_collections.ConfigDict, place_keys: Sequence[str] = ()
) -> str:
  """A short hash of `recipe(config, place_keys)`."""
  text = json.dumps(recipe(config, place_keys), sort_keys=True)
  return hashlib.sha256(text.encode()).hexdigest()[:16]


# The model and training code: what a run's result depends on.
MODEL_CODE = ("codir_jax", "configs")


def _git(repo: str, *args: str) -> str:
  """stdout of `git args` in `repo`; raises OSError/CalledProcessError."""
  return subprocess.run(
      ["git", *args], cwd=repo, capture_output=True, text=True, check=True
  ).stdout.strip()


@functools.lru_cache(maxsize=None)
def code_version(repo: str) -> str:
  """HEAD's commit, '-dirty' when codir_jax/ or configs/ differ from it.

  Cached: `main` reads it at start, so a long-running worker reports the
  code it imported, not a later checkout.
  """
  try:
    head = _git(repo, "rev-parse", "--short=12", "HEAD")
    dirty = _git(repo, "status", "--porcelain", "--", *MODEL_CODE)
  except (OSError, subprocess.CalledProcessError):
    return "unknown"
  return head + ("-dirty" if dirty else "")


@functools.lru_cache(maxsize=None)
def source_tree(repo: str, code: str) -> str:
  """Git tree ids of codir_jax/ and configs/ at commit `code` ('a+b').

  Runs recorded at different commits of the repository used the same model
  and training code exactly when these agree. 'unknown' for a dirty or
  unrecorded version, or where git cannot answer.
  """
  if not code or code.endswith("-dirty") or code in ("unknown", "unrecorded"):
    return "unknown"
  try:
    out = _git(repo, "rev-parse", *(f"{code}:{d}" for d in MODEL_CODE))
  except (OSError, subprocess.CalledProcessError):
    return "unknown"
  return "+".join(tree[:12] for tree in out.split())


def claim(out: str, name: str) -> bool:
  """Atomically claims run `name` for this process (takes over dead ones)."""
  path = os.path.join(out, ".claims", name.replace("/", "__"))
  os.makedirs(os.path.dirname(path), exist_ok=True)
  for _ in range(2):
    try:
      fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
      try:
        with open(path, encoding="utf-8") as f:
          pid = int(f.read().strip() or 0)
        os.kill(pid, 0)
        return False  # Alive: someone else runs it.
      except (ProcessLookupError, ValueError):
        os.remove(path)  # Stale claim of a dead worker.
        continue
      except (FileNotFoundError, PermissionError):
        return False
    with os.fdopen(fd, "w") as f:
      f.write(str(os.getpid()))
    return True
  return False


def release(out: str, name: str) -> None:
  path = os.path.join(out, ".claims", name.replace("/", "__"))
  if os.path.exists(path):
    os.remove(path)
