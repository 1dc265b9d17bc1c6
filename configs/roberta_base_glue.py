"""The paper's setting: RoBERTa-base (12 layers) -> 6-layer student.

  python -m codir_jax.main --config configs/roberta_base_glue.py:task=sst2 \
      --config.mode=finetune_teacher \
      --config.teacher.path=/path/to/roberta-base --workdir runs/rb_sst2_t
  python -m codir_jax.main --config configs/roberta_base_glue.py:task=sst2 \
      --config.teacher.path=runs/rb_sst2_t/teacher --workdir runs/rb_sst2_s

`teacher.path` is a local Hugging Face roberta-base directory (download it
with `huggingface-cli download roberta-base --local-dir ...`).

Hardware: one 8-GPU host or a TPU v4-8 (batch split over 'data'); bf16
compute. Runtime: SST-2, 10 epochs, ~1.5 h on 8 A100s. Expected (paper,
CoDIR-Fine, 6 layers): SST-2 dev ~93, MRPC ~89, STS-B ~88 (paper Table 1
reports test-set numbers of that order).
"""

from configs import glue_codir


def get_config(arg=None):
  c = glue_codir.get_config(arg)
  c.teacher.path = ""  # Must be set to a local roberta-base directory.
  c.teacher.dtype = "bfloat16"
  c.student.dtype = "bfloat16"
  c.student.layers = ()  # 12 -> 6: teacher layers 2, 4, ..., 12.
  c.loss.proj_dim = 128
  c.bank.num_negatives = 100
  c.optim.num_epochs = 10.0
  c.ckpt.every_steps = 1000
  c.log.eval_every_steps = 1000
  return c
