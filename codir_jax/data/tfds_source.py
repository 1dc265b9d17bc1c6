"""GLUE through tensorflow-datasets' own `glue/<task>` builder (optional).

tfds registers the `glue` builder and reads its tfrecord files only when
TensorFlow is importable, so this path needs the optional extra:
`pip install -r requirements-tfds.txt`. It reads an already prepared
`data_dir` and never downloads (`download=False`, `try_gcs=False`): with no
network a download would hang for minutes in DNS retries.

tfds stores examples in a hashed order and tags each with `idx`, its row in
the source file. We sort by `idx` and renumber, so ids are again the index in
the split and match the TSV reader. Labels are remapped to this project's
label order (tfds orders MNLI as entailment/neutral/contradiction; GLUE
submissions use contradiction/entailment/neutral).
"""

import os

import numpy as np

from codir_jax.data import split as split_lib
from codir_jax.data import tasks as tasks_lib

REQUIREMENTS_FILE = 'requirements-tfds.txt'


def require_tensorflow() -> None:
  """Raises ImportError naming the optional requirements file without TF."""
  try:
    import tensorflow  # noqa: F401  pylint: disable=unused-import
  except ImportError as e:
    raise ImportError(
        "source='tfds' reads GLUE with tensorflow-datasets' `glue` builder,"
        ' which needs TensorFlow, and TensorFlow is not installed. Install'
        f' the optional extra with `pip install -r {REQUIREMENTS_FILE}`'
        " (or `pip install 'codir_jax[tfds]'`), or read the original GLUE TSV"
        " files without TensorFlow with source='tsv'."
    ) from e


def label_index_map(spec: tasks_lib.TaskSpec) -> np.ndarray | None:
  """[C_tfds] int32: tfds label index -> project label index (None = same)."""
  if spec.is_regression or spec.tfds_label_names is None:
    return None
  return np.array(
      [spec.label_names.index(n) for n in spec.tfds_label_names], np.int32
  )


def _decode(value) -> str:
  return value.decode('utf-8') if isinstance(value, bytes) else str(value)


def load_tfds_split(
    task: str, split: str, *, data_dir: str | os.PathLike[str] | None
) -> split_lib.GlueSplit:
  """Reads `task`/`split` from a prepared tfds `glue/<task>` dataset.

  Args:
    task: task key (see `tasks.TASKS`).
    split: project split name (`dev` maps to tfds `validation`, ...).
    data_dir: tfds data_dir holding the prepared `glue/<task>`; None uses
      the tfds default.

  Returns:
    The split, ordered by source row, ids = index in the split.

  Raises:
    ImportError: TensorFlow is missing (names `requirements-tfds.txt`).
  """
  spec = tasks_lib.get_task(task)
  layout = spec.layout(split)
  require_tensorflow()
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  ds, info = tfds.load(
      f'glue/{spec.tfds_name}',
      split=spec.tfds_splits[split],
      data_dir=None if data_dir is None else os.fspath(data_dir),
      download=False,
      try_gcs=False,
      shuffle_files=False,
      with_info=True,
  )
  if spec.tfds_label_names is not None:
    names = tuple(info.features['label'].names)
    if names != spec.tfds_label_names:
      raise ValueError(
          f'tfds glue/{spec.tfds_name} label names {names} differ from the'
          f' expected {spec.tfds_label_names}; cannot map labels safely'
      )
  key_a, key_b = spec.tfds_text
  idx, text_a, text_b, labels = [], [], [], []
  for ex in tfds.as_numpy(ds):
    idx.append(int(ex['idx']))
    text_a.append(_decode(ex[key_a]))
    if key_b is not None:
      text_b.append(_decode(ex[key_b]))
    labels.append(ex['label'])
  if not idx:
    raise ValueError(f'tfds glue/{spec.tfds_name}:{split} has no examples')
  order = np.argsort(np.asarray(idx, np.int64), kind='stable')
  text_a = [text_a[i] for i in order]
  text_b = [text_b[i] for i in order] if key_b is not None else None
  has_labels = layout.label is not None
  if spec.is_regression:
    y = np.asarray(labels, np.float32)[order]
    if not has_labels:
      y = np.full(len(order), split_lib.NO_LABEL_FLOAT, np.float32)
  else:
    y = np.asarray(labels, np.int64)[order].astype(np.int32)
    mapping = label_index_map(spec)
    if not has_labels:
      y = np.full(len(order), split_lib.NO_LABEL_INT, np.int32)
    elif mapping is not None:
      y = mapping[y]
  return split_lib.GlueSplit(
      task=spec.name,
      split=split,
      text_a=text_a,
      text_b=text_b,
      labels=y,
      has_labels=has_labels,
  )
