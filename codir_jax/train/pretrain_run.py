"""A CoDIR-Pre run: distillation during masked-LM pre-training.

METHOD.md, "Pre-training": L = (1 - beta) MLM-CE + beta rho^2 KL on the
masked-token logits + lambda L_crd. The teacher is a pre-trained masked LM
(BERT/RoBERTa with its MLM head), the student copies its embeddings, MLM
head and every other layer. Contrastive negatives are either the other rows
of the batch (`loss.negatives='in_batch'`, the paper) or a FIFO queue of
recent vectors of each side (`'bank'`, a MoCo-style codir_jax extension:
`bank.queue_size` slots, oldest overwritten first, sampled uniformly among
written slots). Labels do not exist here, so `bank.label_aware` must be
False. The student exports with its MLM head and can then be fine-tuned by
CoDIR-Fine (`configs/glue_codir.py` with `student.init='pretrained'`).
"""

from __future__ import annotations

import functools
import itertools

from jax.sharding import Mesh

from codir_jax import distributed
from codir_jax import models
from codir_jax.data import host_exchange
from codir_jax.data import pretrain_text
from codir_jax.train import builders
from codir_jax.train import evaluation
from codir_jax.train import objective as objective_lib
from codir_jax.train import run as run_lib
from codir_jax.train import settings as settings_lib


def _check(s: settings_lib.Settings) -> None:
  l, d = s.loss, s.data
  if s.bank.label_aware:
    raise ValueError(
        "pretrain_distill has no labels: set --config.bank.label_aware=false"
    )
  if l.crd_weight > 0 and (
      l.objective != "info_nce" or l.positive != "current"
  ):
    raise ValueError(
        "pretrain_distill uses InfoNCE with current positives: set"
        " config.loss.objective='info_nce' and config.loss.positive='current'"
    )
  if s.optim.num_steps <= 0:
    raise ValueError(
        "pretrain_distill streams its corpus: set config.optim.num_steps > 0"
    )
  if not d.train_files:
    raise ValueError("config.pretrain.train_files is empty")
  if (
      l.crd_weight > 0
      and l.negatives == "bank"
      and s.bank.queue_size < s.optim.batch_size
  ):
    raise ValueError(
        f"config.bank.queue_size = {s.bank.queue_size} must be >= the"
        f" global batch ({s.optim.batch_size}): each step enqueues a"
        " whole batch"
    )


def _mlm_model(path: str, dtype, seed: int) -> models.MaskedLM:
  return models.from_pretrained(path, head="masked_lm", dtype=dtype, seed=seed)


def _student(
    s: settings_lib.Settings, teacher_path: str, tokenizer
) -> models.MaskedLM:
  m = s.models
  dtype = builders.dtype_of(m.student_dtype, "config.student.dtype")
  if m.student_init == "pretrained":
    path = builders.resolve_path(m.student_path, "config.student.path")
    student = _mlm_model(path, dtype, s.seed)
    builders.check_models(s, tokenizer, student=student)
    return student
  source = _mlm_model(teacher_path, dtype, s.seed)
  return models.make_student(source, list(m.student_layers) or None)


def _iterator(
    s: settings_lib.Settings, tokenizer, files, *, mesh, seed, num_epochs=None
):
  share = distributed.data_share(mesh)  # This process's rows of a batch.
  return pretrain_text.PretrainIterator(
      list(files),
      tokenizer,
      batch_size=share.local_batch(s.optim.batch_size),
      max_len=s.data.max_len,
      doc_format=s.data.doc_format,
      mask_prob=s.data.mask_prob,
      seed=seed,
      num_epochs=num_epochs,
      process_index=share.index,
      process_count=share.count,
      # Each process tokenises 1/P of the text; the batches are the
      # single-process ones (pretrain_text.py, "Several processes").
      exchange=host_exchange.allgather
      if distributed.one_share_per_process(mesh)
      else None,
  )


def build_run(s: settings_lib.Settings, workdir: str, mesh: Mesh):
  """Loads the MLM teacher, the student and the text streams.

  Returns:
    (run.Run, fixed evaluation batches).
  """
  _check(s)
  teacher_path = builders.resolve_path(
      s.models.teacher_path, "config.teacher.path"
  )
  builders.require_head(teacher_path, s.loss.kd_weight, suffix="ForMaskedLM")
  t_dtype = builders.dtype_of(s.models.teacher_dtype, "config.teacher.dtype")
  teacher = _mlm_model(teacher_path, t_dtype, s.seed)
  tokenizer = models.load_tokenizer(teacher_path)
  builders.check_models(s, tokenizer, teacher=teacher)
  model = _student(s, teacher_path, tokenizer)
  uses_queue = s.loss.crd_weight > 0 and s.loss.negatives == "bank"
  obj_spec = objective_lib.spec_from_settings(
      s,
      task_kind="mlm",
      num_student=model.config.num_layers,
      num_teacher=teacher.config.num_layers,
      num_train=s.bank.queue_size,
      bank_kind="fifo",
  )
  graphs, params = builders.trainable(
      s, model, teacher, projection=obj_spec.crd_weight > 0
  )

  eval_batches = []
  if s.data.eval_files:
    # A fixed, seeded set of masked batches: comparable across evaluations.
    eval_batches = list(
        itertools.islice(
            _iterator(
                s,
                tokenizer,
                s.data.eval_files,
                mesh=mesh,
                seed=s.seed + 7,
                num_epochs=1,
            ),
            s.data.eval_batches,
        )
    )
  run = run_lib.Run(
      workdir=workdir,
      mesh=mesh,
      model=model,
      teacher_model=teacher,
      graphs=graphs,
      params=params,
      objective=objective_lib.build(obj_spec),
      make_iterator=functools.partial(
          _iterator,
          s,
          tokenizer,
          s.data.train_files,
          mesh=mesh,
          seed=s.seed,
      ),
      evaluate=functools.partial(_evaluate, batches=eval_batches, mesh=mesh),
      tokenizer=tokenizer,
      bank_slots=s.bank.queue_size if uses_queue else 0,
      bank_labels=None,
      bank_all_valid=False,  # A queue slot is a negative once written.
      export_name="student",
      fingerprint={"task": "mlm", "train_files": list(s.data.train_files)},
      **builders.run_settings(s, total_steps=s.optim.num_steps),
  )
  return run, eval_batches


def _evaluate(graphdef, params, *, batches, mesh):
  if not batches:
    return {"score": 0.0}
  return evaluation.evaluate_mlm(graphdef, params, batches, mesh=mesh)
