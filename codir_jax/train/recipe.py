"""A run's recipe is fixed at its first start.

A workdir that holds checkpoints or a summary.json belongs to the config in
its config.json. A rerun there resumes (or, when finished, reports the
stored summary) only if every field that changes the math is unchanged;
otherwise it is refused before anything is loaded, compiled or written, so
config.json, summary.json and metrics.jsonl stay byte-identical.

Fields a rerun may change (RESUME_SAFE) decide only when to log, evaluate,
save or stop early, where results go, and how processes and devices are
laid out (the checkpoint fingerprint still refuses a bank layout that no
longer fits the mesh), and the memory knobs that do not change the math
(student.remat, teacher.shard_params), and offline KD's teacher-output
cache (teacher.cache_outputs, teacher.cache_dir). Everything else (model, task and
data, losses, bank, optimiser and optim.grad_accum_steps, schedule, seed,
mode) is the recipe. After the NaN/inf tripwire stopped a run
(`<workdir>/nonfinite/` exists), the RECOVERY_KEYS may change too, to
resume from the last finite checkpoint with a lower learning rate.
"""

from __future__ import annotations

import json
import os
from typing import Any

# Keys that change no result (to float rounding), only memory, speed or
# where a cache lives: a config written before one of them existed agrees
# with any value of it (`same_results`; experiments/runs.py).
SAME_RESULTS = (
    "compile_cache.",  # Where compiled programs are kept (not the math).
    # Memory knobs that leave the math unchanged (same losses to float
    # rounding): layer remat and the teacher's parameter sharding.
    # optim.grad_accum_steps is recipe (bank order, dropout draws).
    "student.remat",
    "teacher.shard_params",
    # Offline KD: the teacher's outputs read from a file instead of
    # computed in the step (same outputs to float rounding), and where.
    "teacher.cache_outputs",
    "teacher.cache_dir",
)
RESUME_SAFE = (
    "log.",
    "ckpt.",
    "eval.",
    "distributed.",
    "mesh",
    "sharding_rules",
) + SAME_RESULTS
RECOVERY_KEYS = ("optim.lr", "optim.clip_norm")


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
  """{'a': {'b': 1}} -> {'a.b': 1} (lists stay values)."""
  out = {}
  for k, v in tree.items():
    if isinstance(v, dict):
      out.update(flatten(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out


def _safe(key: str, safe: tuple[str, ...]) -> bool:
  return any(key == p or (p.endswith(".") and key.startswith(p)) for p in safe)


def same_results(key: str) -> bool:
  """Whether flat config `key` is in SAME_RESULTS (changes no result)."""
  return _safe(key, SAME_RESULTS)


def differences(
    stored: dict[str, Any],
    new: dict[str, Any],
    *,
    defaults: dict[str, Any],
    recovering: bool = False,
) -> list[tuple[str, Any, Any]]:
  """(flat key, stored value, new value) for each changed recipe field.

  Args:
    stored: the run's config.json, parsed.
    new: the rerun's resolved config, parsed from the same JSON form.
    defaults: configs/base.py's defaults (nested); a key missing from
      `stored` (added to the code later) is unchanged when `new` holds its
      default (the rule of experiments/runs.py `config_differences`).
    recovering: the tripwire stopped the run; RECOVERY_KEYS may change.
  """
  old, cur, base = flatten(stored), flatten(new), flatten(defaults)
  safe = RESUME_SAFE + (RECOVERY_KEYS if recovering else ())
  diff = []
  for key in sorted(set(old) | set(cur)):
    if _safe(key, safe):
      continue
    if key not in old and key in base and cur.get(key) == base[key]:
      continue
    if old.get(key, KeyError) != cur.get(key, KeyError):
      diff.append((key, old.get(key, "<absent>"), cur.get(key, "<absent>")))
  return diff


def _started(workdir: str) -> bool:
  """Whether `workdir` holds a checkpoint or a summary of a run."""
  if os.path.exists(os.path.join(workdir, "summary.json")):
    return True
  ckpts = os.path.join(workdir, "checkpoints")
  return os.path.isdir(ckpts) and any(n.isdigit() for n in os.listdir(ckpts))


def check_resume(
    workdir: str, config_json: str, *, defaults: dict[str, Any]
) -> dict[str, Any] | None:
  """Refuses a changed recipe; returns a finished run's stored summary.

  Args:
    workdir: the run's directory.
    config_json: the rerun's resolved config (Settings.config_json).
    defaults: configs/base.py's defaults (settings.base_defaults()).

  Returns:
    The stored summary.json when the run already finished with this recipe
    (the caller reports it and writes nothing), else None.

  Raises:
    ValueError: the workdir holds a run of another recipe; lists every
      differing key with both values.
  """
  config_path = os.path.join(workdir, "config.json")
  if not _started(workdir) or not os.path.exists(config_path):
    return None
  with open(config_path, encoding="utf-8") as f:
    stored = json.load(f)
  recovering = os.path.isdir(os.path.join(workdir, "nonfinite"))
  diff = differences(
      stored,
      json.loads(config_json),
      defaults=defaults,
      recovering=recovering,
  )
  if diff:
    lines = "\n  ".join(f"{k}: {a!r} -> {b!r}" for k, a, b in diff)
    allowed = ", ".join(p + "*" if p[-1] == "." else p for p in RESUME_SAFE)
    raise ValueError(
        f"{workdir} holds a run started with another recipe; a run's"
        f" recipe is fixed at its first start. {len(diff)} field(s) differ"
        f" from {config_path} (stored -> now):\n  {lines}\nRerun with the"
        " stored values, or use a new --workdir. Fields that may change on"
        f" resume: {allowed}."
    )
  summary_path = os.path.join(workdir, "summary.json")
  if not os.path.exists(summary_path):
    return None
  with open(summary_path, encoding="utf-8") as f:
    return json.load(f)
