"""codir_jax.data: GLUE loading, tokenisation, batching, metrics, submission.

Typical use (see API.md for the batch contract):

  split = data.load_split('sst2', 'train', data_dir='/path/to/glue')
  tok = transformers.AutoTokenizer.from_pretrained(model_dir)
  ds = data.tokenize_split(split, tok, max_len=128)
  it = data.BatchIterator(ds, batch_size=32, seed=0,
                          process_index=jax.process_index(),
                          process_count=jax.process_count())
  batch = next(it)            # dict of numpy arrays
  state = it.get_state()      # JSON-able; it.set_state(state) to resume
  data.glue_metrics('sst2', predictions, labels)
  data.write_submission(out_dir, 'sst2', 'test', predictions, example_ids)
"""

from codir_jax.data.glue import GlueSplit
from codir_jax.data.glue import load_split
from codir_jax.data.glue import NO_LABEL_FLOAT
from codir_jax.data.glue import NO_LABEL_INT
from codir_jax.data.glue import read_glue_tsv
from codir_jax.data.glue import tsv_path
from codir_jax.data.hf_source import load_hf_split
from codir_jax.data.hf_source import REQUIREMENTS_FILE as HF_REQUIREMENTS
from codir_jax.data.metrics import accuracy
from codir_jax.data.metrics import average_ranks
from codir_jax.data.metrics import f1
from codir_jax.data.metrics import glue_metrics
from codir_jax.data.metrics import matthews_corrcoef
from codir_jax.data.metrics import pearson
from codir_jax.data.metrics import spearman
from codir_jax.data.pipeline import Batch
from codir_jax.data.pipeline import BatchIterator
from codir_jax.data.pretrain_text import mask_tokens
from codir_jax.data.pretrain_text import PretrainIterator
from codir_jax.data.submission import format_predictions
from codir_jax.data.submission import submission_file_name
from codir_jax.data.submission import write_submission
from codir_jax.data.tasks import get_task
from codir_jax.data.tasks import SplitLayout
from codir_jax.data.tasks import TASKS
from codir_jax.data.tasks import TaskSpec
from codir_jax.data.tfds_source import load_tfds_split
from codir_jax.data.tfds_source import REQUIREMENTS_FILE as TFDS_REQUIREMENTS
from codir_jax.data.tokenize import bucket_length
from codir_jax.data.tokenize import make_buckets
from codir_jax.data.tokenize import tokenize_split
from codir_jax.data.tokenize import tokenize_texts
from codir_jax.data.tokenize import TokenizedSplit

__all__ = [
    'Batch',
    'BatchIterator',
    'GlueSplit',
    'HF_REQUIREMENTS',
    'NO_LABEL_FLOAT',
    'NO_LABEL_INT',
    'PretrainIterator',
    'SplitLayout',
    'TASKS',
    'TFDS_REQUIREMENTS',
    'TaskSpec',
    'TokenizedSplit',
    'accuracy',
    'average_ranks',
    'bucket_length',
    'f1',
    'format_predictions',
    'get_task',
    'glue_metrics',
    'load_hf_split',
    'load_split',
    'load_tfds_split',
    'make_buckets',
    'mask_tokens',
    'matthews_corrcoef',
    'pearson',
    'read_glue_tsv',
    'spearman',
    'submission_file_name',
    'tokenize_split',
    'tokenize_texts',
    'tsv_path',
    'write_submission',
]
