"""configs/tiny.py on a ('model', 2) x ('data', -1) mesh.

The model axis comes first, so with 2 processes of 2 devices each process
holds one model half of every data shard: the model axis spans the
processes, and both feed the same (whole) batch (distributed.data_share).
"""

from configs import tiny


def get_config(arg=None):
  c = tiny.get_config(arg)
  c.mesh = [("model", 2), ("data", -1)]
  return c
