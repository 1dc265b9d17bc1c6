"""`GlueSplit`: one split of one GLUE task as columns, whatever its source.

The readers (TSV in glue.py, tensorflow-datasets in tfds_source.py, Hugging
Face datasets in hf_source.py) all return it; this module imports none of
them, so they never import each other.
"""

import dataclasses
from typing import Sequence

import numpy as np

from codir_jax.data import tasks as tasks_lib

# Label fill value of unlabelled (test) splits.
NO_LABEL_INT = -1
NO_LABEL_FLOAT = float('nan')
STSB_RANGE = (0.0, 5.0)


@dataclasses.dataclass(frozen=True, eq=False)
class GlueSplit:
  """One split of one task, as columns.

  Attributes:
    task: task key (`sst2`, `mnli`, ...).
    split: split name (`train`, `dev`, `dev_matched`, `test`, ...).
    text_a: first sentence of every example, verbatim.
    text_b: second sentence, or None for single-sentence tasks.
    labels: [N] int32 class indices (see `TaskSpec.label_names`), or float32
      scores for STS-B. Unlabelled splits hold -1 (int) or NaN (STS-B).
    has_labels: False for test splits.
  """

  task: str
  split: str
  text_a: Sequence[str]
  text_b: Sequence[str] | None
  labels: np.ndarray
  has_labels: bool

  def __len__(self) -> int:
    return len(self.text_a)

  @property
  def example_ids(self) -> np.ndarray:
    """[N] int32: the stable id of each example, its index in the split."""
    return np.arange(len(self), dtype=np.int32)

  @property
  def spec(self) -> tasks_lib.TaskSpec:
    return tasks_lib.get_task(self.task)
