"""source='hf': Hugging Face `datasets` GLUE vs the TSV reader, offline.

Each test builds a small DatasetDict with the real `nyu-mll/glue` feature
schema (column names, ClassLabel names in the Hub's order, `idx`, label -1
in test splits), saves it with `save_to_disk`, and writes the same rows as
GLUE TSV files; `load_split(source='hf')` must give what the independent
TSV reader gives. Nothing here downloads.
"""

import os
import sys
import time

import numpy as np
import pytest

from codir_jax import data
from codir_jax.data import hf_source
from codir_jax.data import tfds_source

datasets = pytest.importorskip('datasets')

# The Hub's ClassLabel names (dataset card of nyu-mll/glue), written out
# here independently of hf_source.HF_LABEL_NAMES.
SST2 = ('negative', 'positive')
MRPC = ('not_equivalent', 'equivalent')
NLI3 = ('entailment', 'neutral', 'contradiction')
# The project's TSV label strings -> the Hub's class name.
TSV_TO_HUB = {
    'sst2': dict(zip('01', SST2)),
    'mrpc': dict(zip('01', MRPC)),
    'mnli': {n: n for n in NLI3},
}

TEXTS = [
    'a "quoted start',
    'Ünïcödé — dash',
    'trailing space ',
    'x y z',
    "it 's  two  spaces",
    'last one.',
]


def _features(task):
  v, s = datasets.Value, datasets.Value('string')
  text = {
      'sst2': ['sentence'],
      'mrpc': ['sentence1', 'sentence2'],
      'stsb': ['sentence1', 'sentence2'],
      'mnli': ['premise', 'hypothesis'],
  }[task]
  label = (
      v('float32')
      if task == 'stsb'
      else datasets.ClassLabel(
          names=list({'sst2': SST2, 'mrpc': MRPC, 'mnli': NLI3}[task])
      )
  )
  return (
      datasets.Features(
          {**{k: s for k in text}, 'label': label, 'idx': v('int32')}
      ),
      text,
  )


def _hub_split(task, rows, *, labelled, rng):
  """A Dataset of `rows` (a, b, tsv_label) stored in a shuffled row order."""
  features, text = _features(task)
  cols = {k: [] for k in (*text, 'label', 'idx')}
  for i in rng.permutation(len(rows)):
    a, b, y = rows[i]
    cols[text[0]].append(a)
    if len(text) > 1:
      cols[text[1]].append(b)
    if not labelled:
      cols['label'].append(-1.0 if task == 'stsb' else -1)
    elif task == 'stsb':
      cols['label'].append(float(y))
    else:
      names = features['label'].names
      cols['label'].append(names.index(TSV_TO_HUB[task][y]))
    cols['idx'].append(int(i))
  return datasets.Dataset.from_dict(cols, features=features)


def _rows(task, n, rng):
  labels = {
      'sst2': '01',
      'mrpc': '01',
      'mnli': NLI3,
      'stsb': ['0.000', '1.250', '3.800', '5.000'],
  }[task]
  return [
      (
          TEXTS[i % len(TEXTS)] + f' {i}',
          f'second {i} "q',
          labels[rng.integers(len(labels))],
      )
      for i in range(n)
  ]


def _write_tsv(root, task, split, rows, labelled):
  """The rows in the original GLUE layout (see tasks.py for the columns)."""
  t = '\t'.join
  if task == 'sst2':
    lines = (
        [t(['sentence', 'label'])] + [t([a, y]) for a, _, y in rows]
        if labelled
        else [t(['index', 'sentence'])]
        + [t([str(i), a]) for i, (a, _, _) in enumerate(rows)]
    )
  elif task == 'mrpc':
    head = [
        'Quality' if labelled else 'index',
        '#1 ID',
        '#2 ID',
        '#1 String',
        '#2 String',
    ]
    lines = [t(head)] + [
        t([y if labelled else str(i), '1', '2', a, b])
        for i, (a, b, y) in enumerate(rows)
    ]
  elif task == 'stsb':
    head = [
        'index',
        'genre',
        'filename',
        'year',
        'old_index',
        'source1',
        'source2',
        'sentence1',
        'sentence2',
    ] + (['score'] if labelled else [])
    lines = [t(head)] + [
        t(
            [str(i), 'g', 'f', '2012', '0', 's', 's', a, b]
            + ([y] if labelled else [])
        )
        for i, (a, b, y) in enumerate(rows)
    ]
  else:  # mnli: 12 fields in train, 16 in dev, 10 in test.
    extra = {'train': 2, 'test_matched': 0}.get(split, 6)
    lines = [t(['h'] * (10 + extra))] + [
        t([str(i)] + ['m'] * 7 + [a, b] + ([y] * extra))
        for i, (a, b, y) in enumerate(rows)
    ]
  spec = data.get_task(task)
  path = os.path.join(root, spec.dir_name, spec.file_name(split))
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, 'w', encoding='utf-8', newline='') as f:
    f.write(''.join(line + '\n' for line in lines))


# (task, {our split: (Hub split, labelled, rows)}).
CASES = {
    'sst2': {
        'train': ('train', True, 6),
        'dev': ('validation', True, 4),
        'test': ('test', False, 3),
    },
    'mrpc': {'train': ('train', True, 5), 'test': ('test', False, 2)},
    'stsb': {'dev': ('validation', True, 4), 'test': ('test', False, 2)},
    'mnli': {
        'train': ('train', True, 6),
        'dev_matched': ('validation_matched', True, 5),
        'dev_mismatched': ('validation_mismatched', True, 4),
        'test_matched': ('test_matched', False, 3),
    },
}


def _build(task, root, *, seed=0):
  """Saves Hub-schema DatasetDicts in root/hub/<task>, TSVs in root/tsv."""
  rng = np.random.default_rng(seed)
  hub = {}
  for split, (hub_split, labelled, n) in CASES[task].items():
    rows = _rows(task, n, rng)
    hub[hub_split] = _hub_split(task, rows, labelled=labelled, rng=rng)
    _write_tsv(os.path.join(root, 'tsv'), task, split, rows, labelled)
  datasets.DatasetDict(hub).save_to_disk(os.path.join(root, 'hub', task))
  return os.path.join(root, 'hub'), os.path.join(root, 'tsv')


def _assert_same(got, want):
  assert (got.task, got.split, got.has_labels) == (
      want.task,
      want.split,
      want.has_labels,
  )
  assert list(got.text_a) == list(want.text_a)
  assert (got.text_b is None) == (want.text_b is None)
  if want.text_b is not None:
    assert list(got.text_b) == list(want.text_b)
  assert got.labels.dtype == want.labels.dtype
  np.testing.assert_array_equal(got.labels, want.labels)  # NaN == NaN here.
  np.testing.assert_array_equal(got.example_ids, want.example_ids)


@pytest.mark.parametrize('task', sorted(CASES))
def test_hf_matches_tsv_reader(tmp_path, task):
  hub_root, tsv_root = _build(task, str(tmp_path))
  for split in CASES[task]:
    want = data.load_split(task, split, data_dir=tsv_root)
    # One task's DatasetDict directory, and a root of per-task directories.
    for data_dir in (os.path.join(hub_root, task), hub_root):
      got = data.load_split(task, split, data_dir=data_dir, source='hf')
      _assert_same(got, want)


def test_mnli_labels_are_remapped_to_project_order(tmp_path):
  hub_root, _ = _build('mnli', str(tmp_path))
  s = data.load_split('mnli', 'train', data_dir=hub_root, source='hf')
  raw = datasets.load_from_disk(os.path.join(hub_root, 'mnli', 'train'))
  by_idx = dict(zip(raw['idx'], raw['label']))
  ours = ('contradiction', 'entailment', 'neutral')  # GLUE submission order.
  for i, y in enumerate(s.labels):
    assert ours[y] == NLI3[by_idx[i]]


def test_per_split_save_to_disk_layout(tmp_path):
  hub_root, tsv_root = _build('sst2', str(tmp_path))
  ds = datasets.load_from_disk(os.path.join(hub_root, 'sst2'))
  ds['validation'].save_to_disk(str(tmp_path / 'loose' / 'validation'))
  got = data.load_split('sst2', 'dev', data_dir=tmp_path / 'loose', source='hf')
  _assert_same(got, data.load_split('sst2', 'dev', data_dir=tsv_root))


def test_label_names_and_maps_agree_with_tfds():
  for name, spec in data.TASKS.items():
    if spec.tfds_label_names is not None:
      assert hf_source.HF_LABEL_NAMES[name] == spec.tfds_label_names
    if not spec.is_regression:
      assert len(hf_source.HF_LABEL_NAMES[name]) == spec.num_labels
    want = tfds_source.label_index_map(spec)
    got = hf_source.label_index_map(spec)
    if want is None or got is None:
      # Identity either way (tfds [0, 1] for QNLI/RTE is the identity too).
      for m in (want, got):
        assert m is None or list(m) == list(range(len(m)))
    else:
      np.testing.assert_array_equal(got, want)
  np.testing.assert_array_equal(
      hf_source.label_index_map(data.get_task('mnli')), [1, 2, 0]
  )


def test_other_tasks_data_is_rejected(tmp_path):
  hub_root, _ = _build('sst2', str(tmp_path))
  os.rename(os.path.join(hub_root, 'sst2'), os.path.join(hub_root, 'cola'))
  # Same columns as CoLA, other ClassLabel names.
  with pytest.raises(ValueError, match='ClassLabel names'):
    data.load_split('cola', 'train', data_dir=hub_root, source='hf')
  with pytest.raises(ValueError, match=r"lacks the columns \['sentence1'"):
    data.load_split(
        'mrpc', 'train', data_dir=os.path.join(hub_root, 'cola'), source='hf'
    )


def test_missing_split_and_unlabelled_rows_in_labelled_split(tmp_path):
  hub_root, _ = _build('mrpc', str(tmp_path))
  with pytest.raises(ValueError, match=r"no split 'validation'.*'test'"):
    data.load_split('mrpc', 'dev', data_dir=hub_root, source='hf')
  test_rows = datasets.load_from_disk(os.path.join(hub_root, 'mrpc', 'test'))
  test_rows.save_to_disk(str(tmp_path / 'bad' / 'validation'))
  with pytest.raises(ValueError, match='label -1'):
    data.load_split('mrpc', 'dev', data_dir=tmp_path / 'bad', source='hf')


def test_missing_data_dir_fails_fast_without_download(tmp_path):
  start = time.monotonic()
  with pytest.raises(FileNotFoundError, match='save_to_disk'):
    data.load_split('sst2', 'train', data_dir=tmp_path / 'nope', source='hf')
  assert time.monotonic() - start < 5


def test_missing_datasets_names_requirements_file(tmp_path, monkeypatch):
  monkeypatch.setitem(sys.modules, 'datasets', None)  # import -> ImportError
  with pytest.raises(ImportError, match='requirements-hf.txt'):
    data.load_split('sst2', 'train', data_dir=tmp_path, source='hf')


def test_unknown_source_lists_hf(tmp_path):
  with pytest.raises(ValueError, match="'hf'"):
    data.load_split('sst2', 'train', data_dir=tmp_path, source='parquet')


def test_requirements_file_pins_datasets():
  import codir_jax  # pylint: disable=g-import-not-at-top

  root = os.path.dirname(os.path.dirname(codir_jax.__file__))
  path = os.path.join(root, data.HF_REQUIREMENTS)
  if not os.path.exists(path):
    pytest.skip('not a source checkout')
  with open(path) as f:
    pins = [l for l in f.read().split('\n') if l.startswith('datasets')]
  assert len(pins) == 1 and '==' in pins[0]
