"""CoDIR-Pre: distil a masked-LM teacher into a half-depth student.

  python -m codir_jax.main --config configs/pretrain_codir.py \
      --config.teacher.path=/path/to/bert-base-uncased \
      --config.pretrain.train_files='("corpus/*.txt",)' \
      --config.pretrain.eval_files='("heldout.txt",)' --workdir runs/pre

The teacher is a local Hugging Face masked LM directory with its MLM head
(bert-base-uncased or roberta-base; none ships offline here). The student
(every other layer + embeddings + MLM head) exports to <workdir>/student
and loads in transformers' AutoModelForMaskedLM; fine-tune it afterwards
with configs/glue_codir.py --config.student.init=pretrained
--config.student.path=<workdir>/student (the paper's CoDIR-Pre row).

Arguments: queue (negatives from FIFO queues of recent vectors of each side,
MoCo-style, a codir_jax extension, instead of the paper's in-batch
negatives), kd_only (lambda = 0).
Hardware: an 8-GPU host or TPU v4-8 for BERT-base, bf16. Runtime: depends
on the corpus (the paper pre-trains on BookCorpus + Wikipedia).
Expected: held-out MLM accuracy of the student a few points below the
teacher's.
"""

from configs import base
from configs import common


def get_config(arg=None):
  args = common.parse_arg(arg, queue=False, kd_only=False)
  c = base.get_base_config()
  c.mode = "pretrain_distill"
  c.task.max_len = 128
  c.loss.kd_weight = 0.5
  c.loss.crd_weight = 0.0 if args.kd_only else 0.1
  # Paper: in-batch negatives; `queue`: FIFO queues (bank.queue_size slots).
  c.loss.negatives = "bank" if args.queue else "in_batch"
  c.bank.label_aware = False  # No labels in pre-training.
  c.bank.queue_size = 4096
  c.bank.num_negatives = 256
  c.optim.batch_size = 256
  c.optim.lr = 1e-4
  c.optim.weight_decay = 0.01
  c.optim.num_steps = 100_000
  c.optim.warmup_frac = 0.01
  c.teacher.dtype = "bfloat16"
  c.student.dtype = "bfloat16"
  c.ckpt.every_steps = 2000
  c.log.eval_every_steps = 2000
  return c
