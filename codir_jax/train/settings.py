"""The config edge of train/: ConfigDict in, frozen dataclasses out.

This is the only module under codir_jax/train/ that reads an
`ml_collections.ConfigDict` (STYLE.md sec. 2). `from_config` checks every
named choice and returns `Settings`, a tree of frozen dataclasses of plain
values; the run builders, the loop and the step take those. Field meanings
and defaults are documented in configs/base.py.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import ml_collections

from codir_jax import compile_cache as cache_lib
from codir_jax import config_checks
from codir_jax.models import remat

MODES = (
    "finetune_teacher",
    "distill",
    "evaluate",
    "predict",
    "demo",
    "pretrain_distill",
)
# Modes that read GLUE splits (demo writes its own task when data_dir = '').
_GLUE_MODES = ("finetune_teacher", "distill", "evaluate", "predict")
CHOICES = {
    "loss.objective": ("info_nce", "nce"),
    "loss.negatives": ("bank", "in_batch"),
    "loss.pooling": ("mean", "first"),
    "loss.combine": ("concat", "per_layer"),
    "loss.positive": ("current", "bank"),
    "student.init": ("teacher_layers", "pretrained"),
    "distributed.cpu_collectives": ("", "gloo"),
    "student.remat": tuple(remat.POLICIES),
}


@dataclasses.dataclass(frozen=True)
class OptimSettings:
  """What `optimizer.make_optimizer` needs (total_steps resolved)."""

  lr: float
  weight_decay: float
  b1: float
  b2: float
  eps: float
  warmup_frac: float
  clip_norm: float
  total_steps: int


@dataclasses.dataclass(frozen=True)
class CheckpointSettings:
  every_steps: int = 500  # Periodic save interval (steps).
  keep: int = 3  # How many of the latest checkpoints to keep.
  async_save: bool = True  # Write in a background thread.


@dataclasses.dataclass(frozen=True)
class Data:
  task: str
  source: str
  data_dir: str
  max_len: int
  min_bucket: int
  train_limit: int
  eval_limit: int
  eval_batch_size: int
  # pretrain_distill only.
  train_files: tuple[str, ...] = ()
  eval_files: tuple[str, ...] = ()
  eval_batches: int = 0
  doc_format: str = "line"
  mask_prob: float = 0.15


@dataclasses.dataclass(frozen=True)
class Models:
  teacher_path: str
  teacher_dtype: str
  student_init: str
  student_layers: tuple[int, ...]
  student_path: str
  student_dtype: str
  teacher_cache: bool = False  # teacher.cache_outputs (teacher_cache.py).
  teacher_cache_dir: str = ""


@dataclasses.dataclass(frozen=True)
class Loss:
  kd_weight: float
  kd_temperature: float
  crd_weight: float
  pkd_weight: float
  temperature: float
  objective: str
  negatives: str
  pooling: str
  teacher_layers: Any  # 'even' | 'odd' | tuple of 1-based layers.
  combine: str
  proj_dim: int
  positive: str
  crd_batch_scaled: bool


@dataclasses.dataclass(frozen=True)
class Bank:
  num_negatives: int
  momentum: float
  label_aware: bool
  regression_gap: float
  all_valid_at_init: bool
  queue_size: int
  shared_negatives: bool


@dataclasses.dataclass(frozen=True)
class Optim:
  batch_size: int
  lr: float
  weight_decay: float
  b1: float
  b2: float
  eps: float
  warmup_frac: float
  clip_norm: float
  num_epochs: float
  num_steps: int

  def optimizer(self, total_steps: int) -> OptimSettings:
    return OptimSettings(
        lr=self.lr,
        weight_decay=self.weight_decay,
        b1=self.b1,
        b2=self.b2,
        eps=self.eps,
        warmup_frac=self.warmup_frac,
        clip_norm=self.clip_norm,
        total_steps=total_steps,
    )


@dataclasses.dataclass(frozen=True)
class Scale:
  """Memory and layout knobs for large runs (off = the plain step)."""

  remat: str = ""  # student.remat: layer remat policy ('' = off).
  grad_accum_steps: int = 1  # optim.grad_accum_steps (1 = off).
  shard_teacher: bool = False  # teacher.shard_params: FSDP over 'data'.


@dataclasses.dataclass(frozen=True)
class Distributed:
  """config.distributed: joining a multi-process cluster (distributed.py)."""

  initialize: bool = False
  coordinator_address: str = ""  # 'host:port'; '' = auto-detect.
  num_processes: int = 0  # 0 = auto-detect.
  process_id: int = -1  # -1 = auto-detect.
  cpu_collectives: str = ""  # '' | 'gloo'.


def _distributed(g: ml_collections.ConfigDict) -> Distributed:
  """Checked config.distributed (one ValueError naming every bad key)."""
  d = Distributed(
      **{f.name: g[f.name] for f in dataclasses.fields(Distributed)}
  )
  need = {}
  if type(d.num_processes) is not int or d.num_processes < 0:
    need["num_processes"] = "an int >= 0 (0 = auto-detect)"
  if type(d.process_id) is not int or d.process_id < -1:
    need["process_id"] = "an int >= -1 (-1 = auto-detect)"
  elif 0 < d.num_processes <= d.process_id:
    need["process_id"] = f"< num_processes ({d.num_processes})"
  host, _, port = d.coordinator_address.rpartition(":")
  if d.coordinator_address and not (host and port.isdigit()):
    need["coordinator_address"] = "'host:port' or '' (auto-detect)"
  if not d.initialize:
    for f in dataclasses.fields(Distributed)[1:]:
      if getattr(d, f.name) != f.default:
        need[f.name] = "initialize = True to take effect"
  if need:
    raise ValueError(
        "invalid config.distributed: "
        + "; ".join(
            f"config.distributed.{k} = {getattr(d, k)!r} needs {v}"
            for k, v in need.items()
        )
    )
  return d


@dataclasses.dataclass(frozen=True)
class Log:
  every_steps: int
  eval_every_steps: int
  eval_patience: int
  tensorboard: bool


@dataclasses.dataclass(frozen=True)
class Eval:
  model_path: str
  compare_teacher: bool


@dataclasses.dataclass(frozen=True)
class Settings:
  """Everything a run reads from its config."""

  mode: str
  seed: int
  data: Data
  models: Models
  loss: Loss
  bank: Bank
  optim: Optim
  ckpt: CheckpointSettings
  log: Log
  eval: Eval
  mesh: tuple[tuple[str, int], ...]
  rules: dict[str, str | None]
  distributed: Distributed
  config_json: str  # The resolved config, as written to config.json.
  scale: Scale = Scale()
  compile_cache: cache_lib.Options = cache_lib.Options()


def _layers(value: Any) -> Any:
  return value if isinstance(value, str) else tuple(int(i) for i in value)


def from_config(config: ml_collections.ConfigDict) -> Settings:
  """Validated settings of `config` (raises ValueError naming the key)."""
  if config.mode not in MODES:
    raise ValueError(f"config.mode = {config.mode!r}; choose from {MODES}")
  config_checks.check_choices(config, CHOICES)
  config_checks.check_values(config)  # Also config.teacher.cache_*.
  t, p, l, b, o = (
      config.task,
      config.pretrain,
      config.loss,
      config.bank,
      config.optim,
  )
  log = config.log
  if config.mode in _GLUE_MODES and t.source == "tsv" and not t.data_dir:
    raise ValueError(
        "config.task.data_dir is empty: point it at a GLUE root in the"
        " original download layout (<root>/SST-2/train.tsv, ...), e.g."
        " --config.task.data_dir=/data/glue; or read GLUE through"
        " tensorflow-datasets (--config.task.source=tfds) or Hugging Face"
        " datasets (--config.task.source=hf). README: 'Getting GLUE'."
    )
  if log.eval_patience < 0 or (log.eval_patience and not log.eval_every_steps):
    raise ValueError(
        f"config.log.eval_patience = {log.eval_patience} needs periodic dev"
        " evaluations (config.log.eval_every_steps > 0) and must be >= 0"
    )
  return Settings(
      mode=config.mode,
      seed=int(config.seed),
      data=Data(
          task=t.name,
          source=t.source,
          data_dir=t.data_dir,
          max_len=int(t.max_len),
          min_bucket=int(t.min_bucket),
          train_limit=int(t.train_limit),
          eval_limit=int(t.eval_limit),
          eval_batch_size=int(t.eval_batch_size),
          train_files=tuple(str(f) for f in p.train_files),
          eval_files=tuple(str(f) for f in p.eval_files),
          eval_batches=int(p.eval_batches),
          doc_format=p.doc_format,
          mask_prob=float(p.mask_prob),
      ),
      models=Models(
          teacher_path=config.teacher.path,
          teacher_dtype=config.teacher.dtype,
          student_init=config.student.init,
          student_layers=tuple(int(i) for i in config.student.layers),
          student_path=config.student.path,
          student_dtype=config.student.dtype,
          teacher_cache=bool(config.teacher.cache_outputs),
          teacher_cache_dir=str(config.teacher.cache_dir),
      ),
      loss=Loss(
          kd_weight=float(l.kd_weight),
          kd_temperature=float(l.kd_temperature),
          crd_weight=float(l.crd_weight),
          pkd_weight=float(l.pkd_weight),
          temperature=float(l.temperature),
          objective=l.objective,
          negatives=l.negatives,
          pooling=l.pooling,
          teacher_layers=_layers(l.teacher_layers),
          combine=l.combine,
          proj_dim=int(l.proj_dim),
          positive=l.positive,
          crd_batch_scaled=bool(l.crd_batch_scaled),
      ),
      bank=Bank(
          num_negatives=int(b.num_negatives),
          momentum=float(b.momentum),
          label_aware=bool(b.label_aware),
          regression_gap=float(b.regression_gap),
          all_valid_at_init=bool(b.all_valid_at_init),
          queue_size=int(b.queue_size),
          shared_negatives=bool(b.shared_negatives),
      ),
      optim=Optim(
          batch_size=int(o.batch_size),
          lr=o.lr,
          weight_decay=o.weight_decay,
          b1=o.b1,
          b2=o.b2,
          eps=o.eps,
          warmup_frac=o.warmup_frac,
          clip_norm=o.clip_norm,
          num_epochs=float(o.num_epochs),
          num_steps=int(o.num_steps),
      ),
      ckpt=CheckpointSettings(
          every_steps=config.ckpt.every_steps,
          keep=config.ckpt.keep,
          async_save=config.ckpt.async_save,
      ),
      log=Log(
          every_steps=int(log.every_steps),
          eval_every_steps=int(log.eval_every_steps),
          eval_patience=int(log.eval_patience),
          tensorboard=bool(log.tensorboard),
      ),
      eval=Eval(
          model_path=config.eval.model_path,
          compare_teacher=bool(config.eval.compare_teacher),
      ),
      mesh=tuple((str(n), int(s)) for n, s in config.mesh),
      rules={k: v for k, v in config.sharding_rules},
      distributed=_distributed(config.distributed),
      config_json=config.to_json_best_effort(indent=2, sort_keys=True) + "\n",
      scale=Scale(
          remat=config.student.remat,
          grad_accum_steps=int(o.grad_accum_steps),
          shard_teacher=bool(config.teacher.shard_params),
      ),
      compile_cache=cache_lib.Options(
          bool(config.compile_cache.enabled), str(config.compile_cache.dir)
      ),
  )


def base_defaults() -> dict[str, Any]:
  """configs/base.py's defaults as a nested dict ({} without configs/)."""
  try:
    from configs import base  # pylint: disable=g-import-not-at-top
  except ImportError:
    return {}
  return json.loads(base.get_base_config().to_json_best_effort())


def demo_stages(
    config: ml_collections.ConfigDict, data_dir: str
) -> tuple[ml_collections.ConfigDict, Any]:
  """The demo's two runs: (teacher config, teacher export -> student config).

  Both start from `config` with `task.data_dir = data_dir`; the teacher
  fine-tunes for `demo.teacher_steps` at `demo.teacher_lr` (no teacher
  cache), the student distils from the teacher's export."""
  base = ml_collections.ConfigDict(config.to_dict())
  base.task.data_dir = data_dir
  teacher = ml_collections.ConfigDict(base.to_dict())
  teacher.mode = "finetune_teacher"
  teacher.teacher.cache_outputs = False
  teacher.optim.num_steps = config.demo.teacher_steps
  teacher.optim.lr = config.demo.teacher_lr

  def student(teacher_export: str) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict(base.to_dict())
    c.mode = "distill"
    c.teacher.path = teacher_export
    return c

  return teacher, student


def demo_task_size(config: ml_collections.ConfigDict) -> tuple[int, int, str]:
  """(train, dev) sizes of the embedded demo task, and the given data_dir."""
  return (
      int(config.demo.num_train),
      int(config.demo.num_dev),
      config.task.data_dir,
  )
