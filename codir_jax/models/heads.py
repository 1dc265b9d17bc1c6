"""Task heads over `Encoder`, laid out like their Hugging Face counterparts.

- `SequenceClassifier`: BERT = pooler (dense + tanh on [CLS]) then a linear
  classifier (`BertForSequenceClassification`); RoBERTa = dense + tanh +
  out_proj on <s> (`RobertaClassificationHead`). `num_labels == 1` is
  regression (one score per example).
- `MaskedLM`: dense + GELU + LayerNorm, then a decoder tied to the word
  embeddings plus a bias (`BertForMaskedLM.cls.predictions`,
  `RobertaForMaskedLM.lm_head`).

Both return float32 logits and the `EncoderOutput`, and like `Encoder` hold
only `nnx.Param` state.
"""

from __future__ import annotations

from flax import nnx
import jax
import jax.numpy as jnp

from codir_jax.models.encoder import dense
from codir_jax.models.encoder import dropout
from codir_jax.models.encoder import Encoder
from codir_jax.models.encoder import EncoderConfig
from codir_jax.models.encoder import EncoderOutput
from codir_jax.models.encoder import LayerNorm


def _split(rng: jax.Array | None, deterministic: bool):
  """(encoder key, head key), or (None, None) when deterministic."""
  if deterministic:
    return None, None
  if rng is None:
    raise ValueError("dropout_rng is required when deterministic=False.")
  return jax.random.fold_in(rng, 0), jax.random.fold_in(rng, 1)


class SequenceClassifier(nnx.Module):
  """Encoder + sequence classification/regression head.

  Attributes:
    encoder: the `Encoder` (BERT: with pooler).
    dense: RoBERTa's head dense layer (None for BERT).
    out_proj: final linear layer D -> num_labels (HF BERT `classifier`).
  """

  def __init__(self, config: EncoderConfig, num_labels: int, *, rngs: nnx.Rngs):
    if num_labels < 1:
      raise ValueError(f"num_labels must be >= 1, got {num_labels}.")
    self.config = config
    self.num_labels = num_labels
    is_bert = config.model_type == "bert"
    d = config.hidden_size
    self.encoder = Encoder(config, rngs=rngs, add_pooler=is_bert)
    self.dense = None if is_bert else dense(d, d, ("embed", None), config, rngs)
    self.out_proj = dense(d, num_labels, ("embed", None), config, rngs)

  def __call__(
      self,
      input_ids: jax.Array,
      attention_mask: jax.Array,
      token_type_ids: jax.Array | None = None,
      *,
      deterministic: bool = True,
      dropout_rng: jax.Array | None = None,
      output_attentions: bool = False,
  ) -> tuple[jax.Array, EncoderOutput]:
    """Returns (logits [B, num_labels] float32, EncoderOutput)."""
    enc_rng, head_rng = _split(dropout_rng, deterministic)
    out = self.encoder(
        input_ids,
        attention_mask,
        token_type_ids,
        deterministic=deterministic,
        dropout_rng=enc_rng,
        output_attentions=output_attentions,
    )
    rate = self.config.hidden_dropout
    keys = (None, None) if head_rng is None else jax.random.split(head_rng)
    if self.dense is None:
      x = self.encoder.pool(out.last_hidden_state)
    else:
      x = dropout(out.last_hidden_state[:, 0], rate, keys[1], deterministic)
      x = jnp.tanh(self.dense(x))
    x = dropout(x, rate, keys[0], deterministic)
    return self.out_proj(x).astype(jnp.float32), out


class MaskedLM(nnx.Module):
  """Encoder + masked-LM head with the decoder tied to the word embeddings.

  Attributes:
    encoder: the `Encoder` (no pooler).
    transform: dense D -> D before GELU.
    transform_norm: LayerNorm after GELU.
    bias: [V] output bias.
  """

  def __init__(self, config: EncoderConfig, *, rngs: nnx.Rngs):
    self.config = config
    d = config.hidden_size
    self.encoder = Encoder(config, rngs=rngs)
    self.transform = dense(d, d, ("embed", None), config, rngs)
    self.transform_norm = LayerNorm(d, config)
    self.bias = nnx.Param(
        jnp.zeros((config.vocab_size,), config.param_dtype),
        out_sharding=("vocab",),
        eager_sharding=False,
    )

  def __call__(
      self,
      input_ids: jax.Array,
      attention_mask: jax.Array,
      token_type_ids: jax.Array | None = None,
      *,
      deterministic: bool = True,
      dropout_rng: jax.Array | None = None,
      output_attentions: bool = False,
  ) -> tuple[jax.Array, EncoderOutput]:
    """Returns (logits [B, T, V] float32, EncoderOutput)."""
    out = self.encoder(
        input_ids,
        attention_mask,
        token_type_ids,
        deterministic=deterministic,
        dropout_rng=dropout_rng,
        output_attentions=output_attentions,
    )
    x = jax.nn.gelu(self.transform(out.last_hidden_state), approximate=False)
    x = self.transform_norm(x)
    table = self.encoder.embeddings.word_embeddings.embedding[...]
    logits = jnp.einsum(
        "btd,vd->btv",
        x,
        table.astype(x.dtype),
        preferred_element_type=jnp.float32,
    )
    return logits + self.bias[...].astype(jnp.float32), out
