"""The tensorflow-datasets source: clear error without TF; mock_data with TF.

No test here may download: with no network tfds would hang for minutes.
"""

import importlib.util
import time

import numpy as np
import pytest

from codir_jax import data
from codir_jax.data import tfds_source

HAS_TF = importlib.util.find_spec('tensorflow') is not None


@pytest.mark.skipif(HAS_TF, reason='TensorFlow is installed')
def test_missing_tensorflow_names_requirements_file(tmp_path):
  start = time.monotonic()
  with pytest.raises(ImportError, match='requirements-tfds.txt'):
    data.load_split('mnli', 'dev_matched', data_dir=tmp_path, source='tfds')
  assert time.monotonic() - start < 5  # failed fast, no download attempt


def test_requirements_file_pins_tensorflow():
  import codir_jax  # pylint: disable=g-import-not-at-top
  import os  # pylint: disable=g-import-not-at-top

  root = os.path.dirname(os.path.dirname(codir_jax.__file__))
  path = os.path.join(root, data.TFDS_REQUIREMENTS)
  if not os.path.exists(path):
    pytest.skip('not a source checkout')
  with open(path) as f:
    pins = [l for l in f.read().split('\n') if l.startswith('tensorflow')]
  assert len(pins) == 1 and '==' in pins[0]


def test_label_maps():
  # tfds MNLI: entailment, neutral, contradiction -> ours 1, 2, 0.
  np.testing.assert_array_equal(
      tfds_source.label_index_map(data.get_task('mnli')), [1, 2, 0]
  )
  np.testing.assert_array_equal(
      tfds_source.label_index_map(data.get_task('rte')), [0, 1]
  )
  assert tfds_source.label_index_map(data.get_task('wnli')) is None
  assert tfds_source.label_index_map(data.get_task('stsb')) is None


@pytest.mark.parametrize(
    'task, split, pair, labelled',
    [
        ('mnli', 'dev_matched', True, True),
        ('sst2', 'train', False, True),
        ('stsb', 'dev', True, True),
        ('rte', 'test', True, False),
    ],
)
def test_tfds_mock_data(tmp_path, task, split, pair, labelled):
  pytest.importorskip('tensorflow')
  tfds = pytest.importorskip('tensorflow_datasets')
  with tfds.testing.mock_data(num_examples=6):
    s = data.load_split(task, split, data_dir=tmp_path, source='tfds')
  assert len(s) == 6 and s.has_labels == labelled
  assert all(isinstance(t, str) for t in s.text_a)
  assert (s.text_b is not None) == pair
  np.testing.assert_array_equal(s.example_ids, np.arange(6))
  spec = data.get_task(task)
  if spec.is_regression:
    assert s.labels.dtype == np.float32
  elif labelled:
    assert s.labels.min() >= 0 and s.labels.max() < spec.num_labels
  else:
    assert (s.labels == -1).all()
