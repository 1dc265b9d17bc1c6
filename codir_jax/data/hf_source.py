"""GLUE through the Hugging Face `datasets` library (optional extra).

`source='hf'` reads the Hub's `nyu-mll/glue` dataset (config = the task,
e.g. `sst2`, `mnli`) with the `datasets` library, which is not a runtime
dependency: `pip install -r requirements-hf.txt` (or `codir_jax[hf]`).

`data_dir` says where the data comes from:

* empty or None: `datasets.load_dataset('nyu-mll/glue', <config>)`, which
  downloads into the Hugging Face cache on first use (needs network);
* a directory written by `DatasetDict.save_to_disk` (holding
  `dataset_dict.json`) or by `Dataset.save_to_disk` per split (holding
  `<split>/state.json`), either for one task or with one such directory per
  task under it (`<data_dir>/<config>/...`). Read with
  `datasets.load_from_disk`: no network;
* any other existing directory: the `cache_dir` of `load_dataset` (offline
  when the task is cached there, with `HF_HUB_OFFLINE=1`).

The Hub dataset has the same feature names, split names and ClassLabel
orders as tensorflow-datasets' `glue` builder (both come from the same
GLUE builder), so splits and labels map exactly as in `tfds_source.py`:
`dev` -> `validation`, MNLI `dev_matched` -> `validation_matched`, ...;
MNLI's entailment/neutral/contradiction ids become this project's
contradiction/entailment/neutral order (`label_index_map`). Test splits
carry label -1 on the Hub; they come back unlabelled (-1, or NaN for
STS-B). Rows are ordered by the `idx` feature (the row in the source file),
so ids are the index in the split and match the TSV reader.
"""

import os
from typing import Any, Mapping

import numpy as np

from codir_jax.data import split as split_lib
from codir_jax.data import tasks as tasks_lib

REQUIREMENTS_FILE = 'requirements-hf.txt'
HUB_NAME = 'nyu-mll/glue'

# ClassLabel names of every classification config of `nyu-mll/glue` (its
# dataset card), in id order.
HF_LABEL_NAMES: Mapping[str, tuple[str, ...]] = {
    'cola': ('unacceptable', 'acceptable'),
    'sst2': ('negative', 'positive'),
    'mrpc': ('not_equivalent', 'equivalent'),
    'qqp': ('not_duplicate', 'duplicate'),
    'mnli': ('entailment', 'neutral', 'contradiction'),
    'qnli': ('entailment', 'not_entailment'),
    'rte': ('entailment', 'not_entailment'),
    'wnli': ('not_entailment', 'entailment'),
    'ax': ('entailment', 'neutral', 'contradiction'),
}


def label_index_map(spec: tasks_lib.TaskSpec) -> np.ndarray | None:
  """[C] int32: Hub label id -> project label id (None = the same id).

  NLI configs name their classes with this project's label names, so they
  map by name (MNLI [1, 2, 0]); the 0/1 tasks keep GLUE's 0/1 as the id.
  """
  if spec.is_regression:
    return None
  names = HF_LABEL_NAMES[spec.name]
  if not set(names) <= set(spec.label_names):
    return None
  return np.array([spec.label_names.index(n) for n in names], np.int32)


def require_datasets() -> Any:
  """Returns the `datasets` module; ImportError naming the extra without it."""
  try:
    import datasets  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(
        "source='hf' reads GLUE with the Hugging Face `datasets` library,"
        ' which is not installed. Install the optional extra with'
        f' `pip install -r {REQUIREMENTS_FILE}` (or'
        " `pip install 'codir_jax[hf]'`), or read the original GLUE TSV"
        " files with source='tsv'."
    ) from e
  return datasets


def hf_names(task: str, split: str) -> tuple[str, str]:
  """(Hub config name, Hub split name) of a project task and split."""
  spec = tasks_lib.get_task(task)
  spec.layout(split)  # Raises on an unknown split.
  return spec.tfds_name, spec.tfds_splits[split]


def _open_split(datasets, config: str, hf_split: str, data_dir) -> Any:
  """The `datasets.Dataset` of one split, from `data_dir` (see module doc)."""
  if data_dir is None or not os.fspath(data_dir):
    return datasets.load_dataset(HUB_NAME, config, split=hf_split)
  root = os.fspath(data_dir)
  for base in (os.path.join(root, config), root):
    if os.path.isfile(os.path.join(base, hf_split, 'state.json')):
      return datasets.load_from_disk(os.path.join(base, hf_split))
    if os.path.isfile(os.path.join(base, 'dataset_dict.json')):
      saved = sorted(datasets.load_from_disk(base))
      raise ValueError(
          f'{base} (a saved DatasetDict) has no split {hf_split!r} for'
          f' {HUB_NAME}/{config}; it holds {saved}'
      )
  if os.path.isdir(root):
    return datasets.load_dataset(
        HUB_NAME, config, split=hf_split, cache_dir=root
    )
  raise FileNotFoundError(
      f"source='hf': data_dir {root!r} does not exist. Pass a directory"
      ' written by DatasetDict.save_to_disk (e.g. after'
      f" load_dataset('{HUB_NAME}', '{config}')), a datasets cache_dir,"
      ' or an empty data_dir to download from the Hub.'
  )


def _check_schema(ds, spec: tasks_lib.TaskSpec, where: str) -> None:
  """Raises ValueError unless `ds` has the task's Hub columns and labels."""
  config_name = getattr(ds.info, 'config_name', None)
  if config_name and config_name != spec.tfds_name:
    raise ValueError(
        f'{where} holds config {config_name!r}, not' f' {spec.tfds_name!r}'
    )
  wanted = [k for k in (*spec.tfds_text, 'label') if k is not None]
  missing = [k for k in wanted if k not in ds.column_names]
  if missing:
    raise ValueError(
        f'{where} lacks the columns {missing} of'
        f' {HUB_NAME}/{spec.tfds_name}; it has {ds.column_names}'
    )
  if spec.is_regression:
    return
  feature = ds.features['label']
  names = tuple(getattr(feature, 'names', None) or ())
  if names != HF_LABEL_NAMES[spec.name]:
    raise ValueError(
        f'{where}: label feature {feature} differs from the expected'
        f' ClassLabel names {HF_LABEL_NAMES[spec.name]}; cannot map labels'
        ' safely'
    )


def load_hf_split(
    task: str, split: str, *, data_dir: str | os.PathLike[str] | None
) -> split_lib.GlueSplit:
  """Reads `task`/`split` of `nyu-mll/glue` with the `datasets` library.

  Args:
    task: task key (see `tasks.TASKS`).
    split: project split name (`dev` maps to the Hub's `validation`, ...).
    data_dir: a saved dataset, a cache_dir, or empty/None for the Hub (see
      the module docstring).

  Returns:
    The split, ordered by `idx`, ids = index in the split; labels [N] int32
    in this project's order (float32 for STS-B), -1 / NaN when unlabelled.

  Raises:
    ImportError: `datasets` is missing (names `requirements-hf.txt`).
    FileNotFoundError: `data_dir` is given but does not exist.
    ValueError: the data has other columns, label names or splits than the
      task, or a labelled split holds a label out of range (e.g. -1).
  """
  spec = tasks_lib.get_task(task)
  layout = spec.layout(split)
  datasets = require_datasets()
  config, hf_split = hf_names(task, split)
  where = f'{HUB_NAME}/{config}:{hf_split}'
  if data_dir is not None and os.fspath(data_dir):
    where += f' in {os.fspath(data_dir)}'
  ds = _open_split(datasets, config, hf_split, data_dir)
  _check_schema(ds, spec, where)
  if len(ds) == 0:
    raise ValueError(f'{where} has no examples')
  key_a, key_b = spec.tfds_text
  keep = [
      k
      for k in (key_a, key_b, 'label', 'idx')
      if k is not None and k in ds.column_names
  ]
  table = ds.select_columns(keep).with_format('arrow')[:]
  if 'idx' in keep:
    order = np.argsort(table.column('idx').to_numpy(), kind='stable')
  else:
    order = np.arange(len(ds))
  texts_a = table.column(key_a).to_pylist()
  text_a = [texts_a[i] for i in order]
  text_b = None
  if key_b is not None:
    texts_b = table.column(key_b).to_pylist()
    text_b = [texts_b[i] for i in order]
  raw = table.column('label').to_numpy()[order]
  has_labels = layout.label is not None
  return split_lib.GlueSplit(
      task=spec.name,
      split=split,
      text_a=text_a,
      text_b=text_b,
      labels=_labels(spec, raw, has_labels, where),
      has_labels=has_labels,
  )


def _labels(
    spec: tasks_lib.TaskSpec, raw: np.ndarray, has_labels: bool, where: str
) -> np.ndarray:
  """[N] Hub labels -> [N] project labels (int32, or float32 for STS-B)."""
  if spec.is_regression:
    if not has_labels:
      return np.full(len(raw), split_lib.NO_LABEL_FLOAT, np.float32)
    y = raw.astype(np.float32)
    lo, hi = split_lib.STSB_RANGE
    bad = np.flatnonzero(~((y >= lo) & (y <= hi)))
    if bad.size:
      raise ValueError(
          f'{where}: example {bad[0]} has score {y[bad[0]]},'
          f' expected one in [{lo}, {hi}]'
      )
    return y
  if not has_labels:
    return np.full(len(raw), split_lib.NO_LABEL_INT, np.int32)
  y = raw.astype(np.int64)
  num = len(HF_LABEL_NAMES[spec.name])
  bad = np.flatnonzero((y < 0) | (y >= num))
  if bad.size:
    raise ValueError(
        f'{where}: example {bad[0]} has label {y[bad[0]]},'
        f' expected 0..{num - 1} (test rows in a labelled split?)'
    )
  mapping = label_index_map(spec)
  return (y if mapping is None else mapping[y]).astype(np.int32)
