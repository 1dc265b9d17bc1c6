"""BERT masking of packed rows for masked-LM batches (CoDIR-Pre).

Masking (BERT). Maskable = attended positions whose id is not a special
token of the tokenizer ([CLS], [SEP], [PAD], [UNK], [MASK] / <s>, </s>, ...).
A row with m maskable positions gets exactly `floor(p*m)` or
`floor(p*m) + 1` masked positions (the latter with probability equal to the
fractional part of p*m, so the expected rate is exactly `mask_prob`), drawn
without replacement. Each is independently replaced by the mask token (80%),
a uniform random non-special token (10%, may equal the original) or kept
(10%). The randomness of row r of epoch e is
`np.random.default_rng([seed, 0, e, r])`: masks depend only on (seed, epoch,
row), so a resumed run sees exactly the same masks, and each epoch re-masks
(RoBERTa dynamic masking).
"""

from typing import Any

import numpy as np

IGNORE_INDEX = -100
MASK_TOKEN_FRACTION = 0.8
RANDOM_TOKEN_FRACTION = 0.1


def mask_tokens(
    ids: np.ndarray,
    maskable: np.ndarray,
    rng: np.random.Generator,
    *,
    mask_prob: float,
    mask_id: int,
    random_ids: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """BERT masking of one row (see the module docstring for the scheme).

  Args:
    ids: [T] int token ids.
    maskable: [T] bool, positions that may be masked.
    rng: the row's generator.
    mask_prob: expected fraction of maskable positions chosen.
    mask_id: the mask token id.
    random_ids: [R] ids the random replacement draws from uniformly.

  Returns:
    (input_ids [T] int32, mlm_labels [T] int32 (-100 where not chosen),
    mlm_mask [T] bool).
  """
  candidates = np.flatnonzero(maskable)
  expected = mask_prob * len(candidates)
  n = int(expected) + int(rng.random() < expected - int(expected))
  chosen = rng.choice(candidates, n, replace=False)
  u = rng.random(n)
  random_tokens = random_ids[rng.integers(0, len(random_ids), n)]
  ids = np.asarray(ids, np.int32)
  original = ids[chosen]
  out = ids.copy()
  out[chosen] = np.where(
      u < MASK_TOKEN_FRACTION,
      mask_id,
      np.where(
          u < MASK_TOKEN_FRACTION + RANDOM_TOKEN_FRACTION,
          random_tokens,
          original,
      ),
  )
  labels = np.full(ids.shape, IGNORE_INDEX, np.int32)
  labels[chosen] = original
  mlm_mask = np.zeros(ids.shape, bool)
  mlm_mask[chosen] = True
  return out, labels, mlm_mask


def special_ids(tokenizer: Any) -> tuple[int, int, int, int]:
  """(start, end, pad, mask) ids: cls/sep, else bos/eos."""
  start = tokenizer.cls_token_id
  start = tokenizer.bos_token_id if start is None else start
  end = tokenizer.sep_token_id
  end = tokenizer.eos_token_id if end is None else end
  name = type(tokenizer).__name__
  if tokenizer.mask_token_id is None:
    raise ValueError(f'{name} has no mask token: masked LM needs one')
  if tokenizer.pad_token_id is None:
    raise ValueError(f'{name} has no pad token')
  if start is None or end is None:
    raise ValueError(f'{name} has neither cls/sep nor bos/eos tokens')
  return (
      int(start),
      int(end),
      int(tokenizer.pad_token_id),
      int(tokenizer.mask_token_id),
  )
