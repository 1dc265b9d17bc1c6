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

import jax
from jax.sharding import Mesh

from codir_jax import models
from codir_jax.data import pretrain_text
from codir_jax.train import builders
from codir_jax.train import evaluation
from codir_jax.train import glue_run
from codir_jax.train import loop


def _check(config) -> None:
  glue_run.check_choices(config)
  l, p = config.loss, config.pretrain
  if config.bank.label_aware:
    raise ValueError(
        "pretrain_distill has no labels: set --config.bank.label_aware=false"
    )
  if l.crd_weight > 0 and (l.objective != "info_nce" or
                           l.positive != "current"):
    raise ValueError(
        "pretrain_distill uses InfoNCE with current positives: set"
        " config.loss.objective='info_nce' and config.loss.positive='current'"
    )
  if config.optim.num_steps <= 0:
    raise ValueError(
        "pretrain_distill streams its corpus: set config.optim.num_steps > 0"
    )
  if not p.train_files:
    raise ValueError("config.pretrain.train_files is empty")
  if (l.crd_weight > 0 and l.negatives == "bank"
      and config.bank.queue_size < config.optim.batch_size):
    raise ValueError(
        f"config.bank.queue_size = {config.bank.queue_size} must be >= the"
        f" global batch ({config.optim.batch_size}): each step enqueues a"
        " whole batch"
    )


def _mlm_model(path: str, dtype, seed: int) -> models.MaskedLM:
  return models.from_pretrained(path, head="masked_lm", dtype=dtype,
                                seed=seed)


def _student(config, teacher_path: str) -> models.MaskedLM:
  dtype = builders.dtype_of(config.student.dtype, "config.student.dtype")
  if config.student.init == "pretrained":
    path = builders.resolve_path(config.student.path, "config.student.path")
    return _mlm_model(path, dtype, config.seed)
  source = _mlm_model(teacher_path, dtype, config.seed)
  return models.make_student(source, list(config.student.layers) or None)


def _iterator(config, tokenizer, files, *, seed, num_epochs=None):
  n_proc = jax.process_count()
  return pretrain_text.PretrainIterator(
      list(files), tokenizer,
      batch_size=config.optim.batch_size // n_proc,
      max_len=config.task.max_len,
      doc_format=config.pretrain.doc_format,
      mask_prob=config.pretrain.mask_prob,
      seed=seed,
      num_epochs=num_epochs,
      process_index=jax.process_index(),
      process_count=n_proc,
  )


def build_run(config, workdir: str, mesh: Mesh):
  """Loads the MLM teacher, the student and the text streams.

  Returns:
    (loop.Run, fixed evaluation batches).
  """
  _check(config)
  teacher_path = builders.resolve_path(config.teacher.path,
                                       "config.teacher.path")
  builders.require_head(teacher_path, config.loss.kd_weight,
                        suffix="ForMaskedLM")
  t_dtype = builders.dtype_of(config.teacher.dtype, "config.teacher.dtype")
  teacher = _mlm_model(teacher_path, t_dtype, config.seed)
  model = _student(config, teacher_path)
  tokenizer = models.load_tokenizer(teacher_path)
  uses_queue = config.loss.crd_weight > 0 and config.loss.negatives == "bank"
  loss = glue_run.loss_settings(
      config, task_kind="mlm", num_student=model.config.num_layers,
      num_teacher=teacher.config.num_layers,
      num_train=int(config.bank.queue_size), bank_kind="fifo",
  )
  graphs, params = builders.trainable(config, model, teacher,
                                      projection=loss.crd_weight > 0)

  eval_files = list(config.pretrain.eval_files)
  eval_batches = []
  if eval_files:
    # A fixed, seeded set of masked batches: comparable across evaluations.
    eval_batches = list(itertools.islice(
        _iterator(config, tokenizer, eval_files, seed=config.seed + 7,
                  num_epochs=1),
        config.pretrain.eval_batches,
    ))
  run = loop.Run(
      workdir=workdir,
      mesh=mesh,
      model=model,
      teacher_model=teacher,
      graphs=graphs,
      params=params,
      loss=loss,
      make_iterator=functools.partial(
          _iterator, config, tokenizer, config.pretrain.train_files,
          seed=config.seed,
      ),
      evaluate=functools.partial(_evaluate, batches=eval_batches, mesh=mesh),
      tokenizer=tokenizer,
      bank_slots=int(config.bank.queue_size) if uses_queue else 0,
      bank_labels=None,
      bank_all_valid=False,  # A queue slot is a negative once written.
      export_name="student",
      fingerprint={"task": "mlm",
                   "train_files": [str(f) for f in config.pretrain.train_files]},
      **builders.run_settings(config, total_steps=int(config.optim.num_steps)),
  )
  return run, eval_batches


def _evaluate(graphdef, params, *, batches, mesh):
  if not batches:
    return {"score": 0.0}
  return evaluation.evaluate_mlm(graphdef, params, batches, mesh=mesh)
