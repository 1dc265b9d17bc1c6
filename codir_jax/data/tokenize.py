"""Batch tokenisation of whole GLUE splits into a compact ragged layout.

A split is tokenised once, up front, with the Rust backend of a transformers
fast tokenizer (`encode_batch_fast` on chunks of the split; about twice as
fast as calling the transformers wrapper, which converts every encoding to
Python lists and dicts). The result is a flat int32 token array plus
offsets, so an epoch of batches is pure numpy indexing (`pipeline.py`).

Truncation matches `tokenizer(a, b, truncation=True, max_length=max_len)`
(longest_first, the tokenizer's truncation side); special tokens are added
by the tokenizer's own post-processor ([CLS] a [SEP] b [SEP] for BERT,
<s> a </s></s> b </s> for RoBERTa).
"""

import dataclasses
import itertools
from typing import Any, Sequence

import numpy as np
import tokenizers

from codir_jax.data import split as split_lib

DEFAULT_MIN_BUCKET = 16
_CHUNK = 8192


@dataclasses.dataclass(frozen=True, eq=False)
class TokenizedSplit:
  """Ragged tokenised split: example i is token_ids[offsets[i]:offsets[i+1]].

  Attributes:
    task: task key.
    split: split name.
    token_ids: [total] int32, all examples concatenated (special tokens
      included, truncated to `max_len`).
    type_ids: [total] int8 segment ids aligned with `token_ids`.
    offsets: [N + 1] int64 start of each example; offsets[-1] == total.
    labels: [N] int32 or float32 (STS-B); -1 / NaN on unlabelled splits.
    example_ids: [N] int32 stable ids (index in the split).
    max_len: truncation length.
    pad_id: the tokenizer's pad token id.
    has_labels: False for test splits.
    is_regression: True for STS-B.
  """

  task: str
  split: str
  token_ids: np.ndarray
  type_ids: np.ndarray
  offsets: np.ndarray
  labels: np.ndarray
  example_ids: np.ndarray
  max_len: int
  pad_id: int
  has_labels: bool
  is_regression: bool

  def __len__(self) -> int:
    return len(self.offsets) - 1

  @property
  def lengths(self) -> np.ndarray:
    """[N] int64 number of tokens of each example."""
    return np.diff(self.offsets)


def make_buckets(
    max_len: int, min_len: int = DEFAULT_MIN_BUCKET
) -> tuple[int, ...]:
  """Padded lengths: powers of two from `min_len` below `max_len`, then it.

  E.g. `make_buckets(128) == (16, 32, 64, 128)` and
  `make_buckets(100) == (16, 32, 64, 100)`. Few buckets = few recompiles.
  """
  if max_len < 1 or min_len < 1:
    raise ValueError(f'max_len and min_len must be >= 1: {max_len}, {min_len}')
  out, b = [], 1
  while b < min_len:
    b *= 2
  while b < max_len:
    out.append(b)
    b *= 2
  out.append(max_len)
  return tuple(out)


def bucket_length(length: int, buckets: Sequence[int]) -> int:
  """Smallest bucket >= `length` (buckets sorted ascending)."""
  i = int(np.searchsorted(np.asarray(buckets), length, side='left'))
  if i == len(buckets):
    raise ValueError(f'length {length} exceeds the largest bucket {buckets}')
  return int(buckets[i])


def _backend(tokenizer: Any, max_len: int) -> tokenizers.Tokenizer:
  """A private copy of the Rust tokenizer with truncation, no padding."""
  if isinstance(tokenizer, tokenizers.Tokenizer):
    backend, side = tokenizer, 'right'
  else:
    if not getattr(tokenizer, 'is_fast', False):
      raise TypeError(
          'tokenize_split needs a transformers *fast* tokenizer (with a Rust'
          f' backend); got {type(tokenizer).__name__}'
      )
    backend = tokenizer.backend_tokenizer
    side = getattr(tokenizer, 'truncation_side', 'right')
  copy = tokenizers.Tokenizer.from_str(backend.to_str())
  copy.enable_truncation(
      max_length=max_len, strategy='longest_first', direction=side
  )
  copy.no_padding()
  return copy


def _pad_id(tokenizer: Any) -> int:
  if isinstance(tokenizer, tokenizers.Tokenizer):
    padding = tokenizer.padding
    return int(padding['pad_id']) if padding else 0
  if tokenizer.pad_token_id is None:
    raise ValueError(f'{type(tokenizer).__name__} has no pad token')
  return int(tokenizer.pad_token_id)


def tokenize_texts(
    tokenizer: Any,
    text_a: Sequence[str],
    text_b: Sequence[str] | None = None,
    *,
    max_len: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Tokenises sentences or sentence pairs in batches.

  Args:
    tokenizer: a transformers fast tokenizer (or a `tokenizers.Tokenizer`).
    text_a: N first sentences.
    text_b: N second sentences, or None.
    max_len: truncation length, special tokens included.

  Returns:
    (token_ids [total] int32, type_ids [total] int8, offsets [N+1] int64).
  """
  if text_b is not None and len(text_b) != len(text_a):
    raise ValueError(f'{len(text_a)} first vs {len(text_b)} second sentences')
  backend = _backend(tokenizer, max_len)
  encode = getattr(backend, 'encode_batch_fast', backend.encode_batch)
  # A single sequence gets the constant segment ids of the post-processor
  # template (all 0 for BERT and RoBERTa): probe once, skip the extraction.
  zero_types = text_b is None and not any(backend.encode('a b c').type_ids)
  ids_parts, type_parts, len_parts = [], [], []
  for lo in range(0, len(text_a), _CHUNK):
    if text_b is None:
      inputs = list(text_a[lo : lo + _CHUNK])
    else:
      inputs = list(zip(text_a[lo : lo + _CHUNK], text_b[lo : lo + _CHUNK]))
    encodings = encode(inputs, add_special_tokens=True)
    ids = [e.ids for e in encodings]
    lens = np.fromiter(map(len, ids), np.int64, len(ids))
    total = int(lens.sum())
    ids_parts.append(
        np.fromiter(itertools.chain.from_iterable(ids), np.int32, total)
    )
    if zero_types:
      type_parts.append(np.zeros(total, np.int8))
    else:
      types = (e.type_ids for e in encodings)
      type_parts.append(
          np.fromiter(itertools.chain.from_iterable(types), np.int8, total)
      )
    len_parts.append(lens)
  lengths = np.concatenate(len_parts) if len_parts else np.zeros(0, np.int64)
  offsets = np.zeros(len(lengths) + 1, np.int64)
  np.cumsum(lengths, out=offsets[1:])
  token_ids = np.concatenate(ids_parts) if ids_parts else np.zeros(0, np.int32)
  type_ids = np.concatenate(type_parts) if type_parts else np.zeros(0, np.int8)
  return token_ids, type_ids, offsets


def tokenize_split(
    split: split_lib.GlueSplit, tokenizer: Any, *, max_len: int = 128
) -> TokenizedSplit:
  """Tokenises a whole GLUE split (single sentences or pairs).

  Args:
    split: the split from `glue.load_split`.
    tokenizer: a transformers fast tokenizer, e.g.
      `transformers.AutoTokenizer.from_pretrained(path)`.
    max_len: truncation length in tokens, special tokens included.

  Returns:
    The ragged tokenised split, ids and labels carried over.
  """
  token_ids, type_ids, offsets = tokenize_texts(
      tokenizer, split.text_a, split.text_b, max_len=max_len
  )
  return TokenizedSplit(
      task=split.task,
      split=split.split,
      token_ids=token_ids,
      type_ids=type_ids,
      offsets=offsets,
      labels=np.asarray(split.labels),
      example_ids=split.example_ids,
      max_len=max_len,
      pad_id=_pad_id(tokenizer),
      has_labels=split.has_labels,
      is_regression=split.spec.is_regression,
  )
