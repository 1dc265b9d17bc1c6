"""Range checks of the config's values (called by settings.from_config).

Outside train/ so that train/ stays shallow; settings.py, the only module
there that reads an `ml_collections.ConfigDict`, calls these. Every
offender is collected into one ValueError naming its key before anything
compiles or touches the workdir.
"""

from __future__ import annotations

import ml_collections


def check_choices(
    config: ml_collections.ConfigDict, choices: dict[str, tuple[str, ...]]
) -> None:
  """Every named alternative in `choices` (key -> allowed) is allowed."""
  for key, allowed in choices.items():
    group, name = key.split(".")
    value = config[group][name]
    if value not in allowed:
      raise ValueError(f"config.{key} = {value!r}; choose from {allowed}")


# (key, requirement, test) for every numeric field; `from_config` collects
# every offender into one ValueError before anything compiles or touches the
# workdir. Checks that need the models (layer ids, vocabulary sizes) run in
# the run builders right after loading them (builders.check_models).
_RANGES = (
    ("loss.temperature", "> 0", lambda v: v > 0),
    ("loss.kd_temperature", "> 0", lambda v: v > 0),
    ("loss.kd_weight", "in [0, 1]", lambda v: 0 <= v <= 1),
    ("loss.crd_weight", ">= 0", lambda v: v >= 0),
    ("loss.pkd_weight", ">= 0", lambda v: v >= 0),
    ("loss.proj_dim", ">= 1", lambda v: v >= 1),
    ("bank.num_negatives", ">= 1", lambda v: v >= 1),
    ("bank.queue_size", ">= 1", lambda v: v >= 1),
    ("bank.momentum", "in [0, 1]", lambda v: 0 <= v <= 1),
    ("optim.batch_size", ">= 1", lambda v: v >= 1),
    ("optim.lr", "> 0", lambda v: v > 0),
    ("optim.eps", "> 0", lambda v: v > 0),
    ("optim.weight_decay", ">= 0", lambda v: v >= 0),
    ("optim.warmup_frac", "in [0, 1]", lambda v: 0 <= v <= 1),
    ("optim.clip_norm", ">= 0 (0 = no clipping)", lambda v: v >= 0),
    ("optim.num_steps", ">= 0 (0 = use num_epochs)", lambda v: v >= 0),
    (
        "optim.grad_accum_steps",
        "an int >= 1 (1 = off)",
        lambda v: isinstance(v, int) and v >= 1,
    ),
    ("task.eval_batch_size", ">= 1", lambda v: v >= 1),
    ("task.max_len", ">= 8", lambda v: v >= 8),
    ("ckpt.every_steps", ">= 1", lambda v: v >= 1),
    ("ckpt.keep", ">= 1", lambda v: v >= 1),
    ("log.every_steps", ">= 1", lambda v: v >= 1),
    ("log.eval_every_steps", ">= 0 (0 = only at the end)", lambda v: v >= 0),
)


# Modes where per-example teacher outputs cannot be cached, and why.
_NO_TEACHER_CACHE = {
    "pretrain_distill": (
        "CoDIR-Pre masks tokens anew every step, so the teacher's outputs"
        " are not per-example constants"
    ),
    "finetune_teacher": "it trains without a frozen teacher",
    "evaluate": "it trains nothing",
    "predict": "it trains nothing",
}


def check_teacher_cache(config: ml_collections.ConfigDict) -> None:
  """config.teacher.cache_outputs / cache_dir: types, and where they apply.

  The cache holds per-example constants, so it needs `distill` (or `demo`,
  whose distill stage uses it) with a term that reads the teacher.
  """
  t, l = config.teacher, config.loss
  key = "config.teacher.cache_outputs"
  why = None
  if not isinstance(t.cache_outputs, bool):
    why = f"{key} = {t.cache_outputs!r}: need True or False"
  elif not isinstance(t.cache_dir, str):
    why = (
        f"config.teacher.cache_dir = {t.cache_dir!r}: need a path"
        " ('' = the default directory)"
    )
  elif t.cache_outputs and config.mode in _NO_TEACHER_CACHE:
    why = (
        f"{key} = True does not apply to config.mode = {config.mode!r}:"
        f" {_NO_TEACHER_CACHE[config.mode]} (it serves 'distill' only)"
    )
  elif t.cache_outputs and not (
      l.kd_weight > 0 or l.crd_weight > 0 or l.pkd_weight > 0
  ):
    why = (
        f"{key} = True but no loss term reads the teacher"
        " (config.loss.kd_weight, crd_weight and pkd_weight are all 0)"
    )
  if why:
    raise ValueError(why)


def check_values(config: ml_collections.ConfigDict) -> None:
  """Every numeric field in range; one ValueError listing all offenders.

  Then `check_teacher_cache`.
  """
  check_teacher_cache(config)
  bad = []
  for key, need, ok in _RANGES:
    group, name = key.split(".")
    value = config[group][name]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
      bad.append(f"config.{key} = {value!r}: need a number {need}")
    elif not ok(value):
      bad.append(f"config.{key} = {value!r}: need {need}")
  o = config.optim
  if o.num_steps == 0 and not o.num_epochs > 0:
    bad.append(
        f"config.optim.num_epochs = {o.num_epochs!r}: need > 0 when"
        " config.optim.num_steps = 0"
    )
  a = o.grad_accum_steps
  if isinstance(a, int) and a >= 1 and o.batch_size % a:
    bad.append(
        f"config.optim.grad_accum_steps = {a}: config.optim.batch_size ="
        f" {o.batch_size} does not split into {a} equal micro-batches"
    )
  ids = list(config.student.layers)
  if any(isinstance(i, bool) or not isinstance(i, int) or i < 1 for i in ids):
    bad.append(f"config.student.layers = {ids}: need ints >= 1 (1-based)")
  elif any(b <= a for a, b in zip(ids, ids[1:])):
    bad.append(f"config.student.layers = {ids}: need strictly increasing")
  if bad:
    raise ValueError(
        f"{len(bad)} invalid config value(s):\n  " + "\n  ".join(bad)
    )
