"""Tiny BERT/RoBERTa configs, models and batches shared by tests.

`tiny_config` gives a codir_jax `EncoderConfig`; `tiny_hf_config` the
matching `transformers` config (torch is only needed by callers that build
HF models). Random weights are perturbed away from the usual init (biases 0,
LayerNorm scale 1) so that a mis-mapped bias or scale cannot go unnoticed.
"""

from __future__ import annotations

from typing import Any

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np

from codir_jax.models import EncoderConfig

VOCAB = 99
MAX_POS = 64


def tiny_config(model_type: str = "bert", **overrides: Any) -> EncoderConfig:
  """2 layers, hidden 64, 4 heads, FFN 128, vocab 99, no dropout."""
  kw = dict(
      model_type=model_type,
      vocab_size=VOCAB,
      hidden_size=64,
      num_layers=2,
      num_heads=4,
      intermediate_size=128,
      max_position_embeddings=MAX_POS,
      type_vocab_size=2 if model_type == "bert" else 1,
      layer_norm_eps=1e-12 if model_type == "bert" else 1e-5,
      pad_token_id=0 if model_type == "bert" else 1,
      hidden_dropout=0.0,
      attention_dropout=0.0,
  )
  kw.update(overrides)
  return EncoderConfig(**kw)


def tiny_hf_config(
    model_type: str = "bert", *, num_labels: int = 2, **overrides: Any
):
  """A transformers config matching `tiny_config`, eager attention."""
  import transformers  # pylint: disable=g-import-not-at-top

  hf = tiny_config(model_type, **overrides).to_hf()
  hf.pop("model_type")
  hf.pop("dtype")
  cls = (
      transformers.BertConfig
      if model_type == "bert"
      else transformers.RobertaConfig
  )
  config = cls(num_labels=num_labels, **hf)
  if num_labels == 1:
    config.problem_type = "regression"
  config._attn_implementation = "eager"  # pylint: disable=protected-access
  return config


def random_hf_model(cls, config, seed: int = 0):
  """A transformers model in eval mode with every parameter perturbed."""
  import torch  # pylint: disable=g-import-not-at-top

  torch.manual_seed(seed)
  model = cls(config).eval()
  with torch.no_grad():
    for p in model.parameters():
      p.add_(0.05 * torch.randn_like(p))
  return model


def randomize(model: nnx.Module, seed: int = 0) -> nnx.Module:
  """Replaces every parameter of a codir_jax model with random values."""
  state = nnx.state(model, nnx.Param)
  leaves, treedef = jax.tree.flatten(nnx.to_pure_dict(state))
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  new = [
      (x + 0.05 * jax.random.normal(k, x.shape)).astype(x.dtype)
      for x, k in zip(leaves, keys)
  ]
  nnx.replace_by_pure_dict(state, jax.tree.unflatten(treedef, new))
  nnx.update(model, state)
  return model


def padded_batch(
    config: EncoderConfig, lengths=(12, 7, 3, 9), seed: int = 0
) -> dict[str, np.ndarray]:
  """Right-padded int32 batch with varied lengths and two segments (BERT)."""
  rng = np.random.default_rng(seed)
  b, t = len(lengths), max(lengths)
  ids = rng.integers(3, config.vocab_size, size=(b, t)).astype(np.int32)
  mask = (np.arange(t)[None] < np.asarray(lengths)[:, None]).astype(np.int32)
  ids = np.where(mask == 1, ids, config.pad_token_id).astype(np.int32)
  types = np.zeros_like(ids)
  if config.type_vocab_size > 1:
    types = (
        (np.arange(t)[None] >= np.asarray(lengths)[:, None] // 2) * mask
    ).astype(np.int32)
  return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


def to_torch(batch: dict[str, np.ndarray]) -> dict[str, Any]:
  import torch  # pylint: disable=g-import-not-at-top

  return {
      k: torch.from_numpy(np.asarray(v, np.int64)) for k, v in batch.items()
  }


def max_abs(a, b, mask: np.ndarray | None = None) -> float:
  """Max |a - b| (over positions where mask [B, T] is 1, if given)."""
  a = np.asarray(jnp.asarray(a, jnp.float32))
  b = np.asarray(b.detach().numpy() if hasattr(b, "detach") else b, np.float32)
  d = np.abs(a - b)
  if mask is not None:
    d = d[np.asarray(mask, bool)]
  return float(d.max())
