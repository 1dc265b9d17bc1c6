"""Tiny settings for tests and laptop smoke runs (seconds on a CPU).

  python -m codir_jax.main --config configs/tiny.py \
      --config.teacher.path=<tiny HF dir> --config.task.data_dir=<GLUE root> \
      --workdir /tmp/tiny

Hardware: any CPU. Runtime: under a minute. Metric: none (plumbing only);
the tests build a 2-layer, width-32 teacher and a small task themselves.
"""

from configs import base
from configs import common


def get_config(arg=None):
  args = common.parse_arg(arg, variant="codir", mode="distill")
  c = base.get_base_config()
  c.mode = args.mode
  base.apply_variant(c, args.variant)
  c.task.max_len = 16
  c.task.min_bucket = 16  # One shape: the step compiles once.
  c.task.eval_batch_size = 8
  c.student.layers = (2,)  # 2-layer teacher -> 1-layer student.
  c.loss.proj_dim = 16
  c.bank.num_negatives = 8
  c.optim.batch_size = 8
  c.optim.lr = 1e-3
  c.optim.num_steps = 6
  c.optim.warmup_frac = 0.1
  c.ckpt.every_steps = 2
  c.ckpt.async_save = False
  c.log.every_steps = 2
  c.log.eval_every_steps = 0
  c.log.tensorboard = False
  return c
