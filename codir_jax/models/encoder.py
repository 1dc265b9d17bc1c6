"""One Flax NNX Transformer encoder for BERT and RoBERTa.

The layout matches Hugging Face `BertModel` / `RobertaModel` (post-LayerNorm,
exact erf GELU, learned absolute positions, token types), so checkpoints map
one-to-one (see `hf_io.py`). The two families differ only in position ids:
RoBERTa counts positions from `pad_token_id + 1` and gives padding tokens
position `pad_token_id`.

Only `nnx.Param` state: dropout takes an explicit `dropout_rng`, so
`graphdef, params = nnx.split(model)` is a pure pytree for `jax.jit`. Every
parameter carries logical axis names (`vocab`, `embed`, `heads`, `mlp`) as
`out_sharding` metadata, eager sharding off: the train step maps them onto
a mesh. Matmuls run in `config.dtype`; attention scores, the mask, softmax
and LayerNorm statistics in float32.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

from flax import nnx
import jax
import jax.numpy as jnp

from codir_jax.models import remat as remat_lib

_INIT_STD = 0.02  # HF `initializer_range` default.
_MODEL_TYPES = ("bert", "roberta")
# Keys of a HF config that mean something this encoder does not implement.
_REQUIRED_HF_VALUES = {
    "hidden_act": "gelu",
    "position_embedding_type": "absolute",
}


@dataclasses.dataclass(frozen=True)
class EncoderConfig:
  """Hyper-parameters of a BERT/RoBERTa encoder (HF names in comments)."""

  model_type: str = "bert"  # 'bert' | 'roberta'
  vocab_size: int = 30522
  hidden_size: int = 768
  num_layers: int = 12  # num_hidden_layers
  num_heads: int = 12  # num_attention_heads
  intermediate_size: int = 3072
  max_position_embeddings: int = 512
  type_vocab_size: int = 2
  layer_norm_eps: float = 1e-12
  pad_token_id: int = 0
  hidden_dropout: float = 0.1  # hidden_dropout_prob
  attention_dropout: float = 0.1  # attention_probs_dropout_prob
  dtype: Any = jnp.float32  # computation dtype
  param_dtype: Any = jnp.float32  # storage dtype of the parameters

  def __post_init__(self):
    if self.model_type not in _MODEL_TYPES:
      raise ValueError(
          f"Unsupported model_type {self.model_type!r}; expected one of "
          f"{_MODEL_TYPES}."
      )
    if self.hidden_size % self.num_heads:
      raise ValueError(
          f"hidden_size {self.hidden_size} is not divisible by num_heads "
          f"{self.num_heads}."
      )

  @property
  def head_dim(self) -> int:
    return self.hidden_size // self.num_heads

  def replace(self, **kwargs: Any) -> EncoderConfig:
    return dataclasses.replace(self, **kwargs)

  @classmethod
  def from_hf(
      cls,
      hf: dict[str, Any],
      *,
      dtype: Any = jnp.float32,
      param_dtype: Any = jnp.float32,
  ) -> EncoderConfig:
    """Builds a config from a HF `config.json` dict.

    Raises:
      ValueError: unsupported `model_type`, activation or position type.
    """
    model_type = hf.get("model_type")
    if model_type not in _MODEL_TYPES:
      raise ValueError(
          f"Unsupported model_type {model_type!r} in HF config; codir_jax "
          f"supports {_MODEL_TYPES}."
      )
    for key, want in _REQUIRED_HF_VALUES.items():
      if hf.get(key, want) != want:
        raise ValueError(
            f"Unsupported {key}={hf[key]!r} in HF config (only {want!r})."
        )
    return cls(
        model_type=model_type,
        vocab_size=hf["vocab_size"],
        hidden_size=hf["hidden_size"],
        num_layers=hf["num_hidden_layers"],
        num_heads=hf["num_attention_heads"],
        intermediate_size=hf["intermediate_size"],
        max_position_embeddings=hf["max_position_embeddings"],
        type_vocab_size=hf["type_vocab_size"],
        layer_norm_eps=hf.get("layer_norm_eps", 1e-12),
        pad_token_id=hf.get("pad_token_id") or 0,
        hidden_dropout=hf.get("hidden_dropout_prob", 0.1),
        attention_dropout=hf.get("attention_probs_dropout_prob", 0.1),
        dtype=dtype,
        param_dtype=param_dtype,
    )

  def to_hf(self) -> dict[str, Any]:
    """Returns the HF `config.json` fields of the encoder (no head fields)."""
    hf = {
        "model_type": self.model_type,
        "vocab_size": self.vocab_size,
        "hidden_size": self.hidden_size,
        "num_hidden_layers": self.num_layers,
        "num_attention_heads": self.num_heads,
        "intermediate_size": self.intermediate_size,
        "hidden_act": "gelu",
        "hidden_dropout_prob": self.hidden_dropout,
        "attention_probs_dropout_prob": self.attention_dropout,
        "max_position_embeddings": self.max_position_embeddings,
        "type_vocab_size": self.type_vocab_size,
        "initializer_range": _INIT_STD,
        "layer_norm_eps": self.layer_norm_eps,
        "pad_token_id": self.pad_token_id,
        "position_embedding_type": "absolute",
        "tie_word_embeddings": True,
        "dtype": jnp.dtype(self.param_dtype).name,
    }
    if self.model_type == "roberta":
      hf.update(bos_token_id=0, eos_token_id=2)
    return hf


class EncoderOutput(NamedTuple):
  """Encoder outputs (a pytree).

  Attributes:
    last_hidden_state: [B, T, D] output of the last layer.
    hidden_states: L + 1 arrays [B, T, D]; index 0 is the embedding output,
      index l the output of layer l (HF convention).
    attentions: L arrays [B, H, T, T] of float32 attention probabilities, or
      None unless requested.
  """

  last_hidden_state: jax.Array
  hidden_states: tuple[jax.Array, ...]
  attentions: tuple[jax.Array, ...] | None


def _init(names: tuple[str | None, ...], init=None):
  init = init or nnx.initializers.normal(_INIT_STD)
  return nnx.with_partitioning(init, names, eager_sharding=False)


def dense(
    in_features: int,
    out_features: int,
    names: tuple[str | None, str | None],
    config: EncoderConfig,
    rngs: nnx.Rngs,
) -> nnx.Linear:
  """nnx.Linear with HF initialisation and logical axis names."""
  return nnx.Linear(
      in_features,
      out_features,
      dtype=config.dtype,
      param_dtype=config.param_dtype,
      kernel_init=_init(names),
      bias_init=_init(names[1:], nnx.initializers.zeros_init()),
      rngs=rngs,
  )


def dropout(
    x: jax.Array, rate: float, rng: jax.Array | None, deterministic: bool
) -> jax.Array:
  """Inverted dropout with an explicit key (identity when deterministic)."""
  if deterministic or rate == 0.0:
    return x
  keep = jax.random.bernoulli(rng, 1.0 - rate, x.shape)
  return jnp.where(keep, x / (1.0 - rate), 0).astype(x.dtype)


class LayerNorm(nnx.Module):
  """LayerNorm with float32 statistics, output in `dtype`."""

  def __init__(self, features: int, config: EncoderConfig):
    self.eps = config.layer_norm_eps
    self.dtype = config.dtype
    self.scale = nnx.Param(
        jnp.ones((features,), config.param_dtype),
        out_sharding=("embed",),
        eager_sharding=False,
    )
    self.bias = nnx.Param(
        jnp.zeros((features,), config.param_dtype),
        out_sharding=("embed",),
        eager_sharding=False,
    )

  def __call__(self, x: jax.Array) -> jax.Array:
    x = x.astype(jnp.float32)
    mean = x.mean(-1, keepdims=True)
    var = jnp.square(x - mean).mean(-1, keepdims=True)
    y = (x - mean) * jax.lax.rsqrt(var + self.eps)
    y = y * self.scale[...].astype(jnp.float32) + self.bias[...].astype(
        jnp.float32
    )
    return y.astype(self.dtype)


class Embeddings(nnx.Module):
  """Word + position + token-type embeddings, LayerNorm, dropout."""

  def __init__(self, config: EncoderConfig, *, rngs: nnx.Rngs):
    self.config = config

    def embed(num, names):
      return nnx.Embed(
          num,
          config.hidden_size,
          dtype=config.dtype,
          param_dtype=config.param_dtype,
          embedding_init=_init(names),
          rngs=rngs,
      )

    self.word_embeddings = embed(config.vocab_size, ("vocab", "embed"))
    self.position_embeddings = embed(
        config.max_position_embeddings, (None, "embed")
    )
    self.token_type_embeddings = embed(config.type_vocab_size, (None, "embed"))
    self.layer_norm = LayerNorm(config.hidden_size, config)

  def position_ids(self, input_ids: jax.Array) -> jax.Array:
    """[B, T] position ids (RoBERTa: offset past the padding index)."""
    if self.config.model_type == "roberta":
      pad = self.config.pad_token_id
      not_pad = (input_ids != pad).astype(jnp.int32)
      return jnp.cumsum(not_pad, axis=1) * not_pad + pad
    return jnp.broadcast_to(jnp.arange(input_ids.shape[1]), input_ids.shape)

  def __call__(
      self,
      input_ids: jax.Array,
      token_type_ids: jax.Array,
      *,
      deterministic: bool,
      rng: jax.Array | None,
  ) -> jax.Array:
    """[B, T] ids and segment ids -> [B, T, D] embedding output."""
    x = (
        self.word_embeddings(input_ids)
        + self.position_embeddings(self.position_ids(input_ids))
        + self.token_type_embeddings(token_type_ids)
    )
    x = self.layer_norm(x)
    return dropout(x, self.config.hidden_dropout, rng, deterministic)


class Layer(nnx.Module):
  """One post-LayerNorm Transformer layer (self-attention + GELU MLP)."""

  def __init__(self, config: EncoderConfig, *, rngs: nnx.Rngs):
    self.config = config
    d, f = config.hidden_size, config.intermediate_size
    self.query = dense(d, d, ("embed", "heads"), config, rngs)
    self.key = dense(d, d, ("embed", "heads"), config, rngs)
    self.value = dense(d, d, ("embed", "heads"), config, rngs)
    self.attention_output = dense(d, d, ("heads", "embed"), config, rngs)
    self.attention_norm = LayerNorm(d, config)
    self.intermediate = dense(d, f, ("embed", "mlp"), config, rngs)
    self.output = dense(f, d, ("mlp", "embed"), config, rngs)
    self.output_norm = LayerNorm(d, config)

  def __call__(
      self,
      x: jax.Array,
      mask_bias: jax.Array,
      *,
      deterministic: bool,
      rng: jax.Array | None,
  ) -> tuple[jax.Array, jax.Array]:
    """x [B, T, D], mask_bias [B, 1, 1, T] -> ([B, T, D], probs [B,H,T,T])."""
    cfg = self.config
    b, t, _ = x.shape
    keys = (None,) * 3 if rng is None else tuple(jax.random.split(rng, 3))

    def heads(y):
      return y.reshape(b, t, cfg.num_heads, cfg.head_dim)

    q, k, v = heads(self.query(x)), heads(self.key(x)), heads(self.value(x))
    scores = jnp.einsum(
        "bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32
    )
    scores = scores * (cfg.head_dim**-0.5) + mask_bias  # [B, H, T, T]
    probs = jax.nn.softmax(scores, axis=-1)
    dropped = dropout(probs, cfg.attention_dropout, keys[0], deterministic)
    context = jnp.einsum("bhqk,bkhd->bqhd", dropped.astype(v.dtype), v)
    attn = self.attention_output(context.reshape(b, t, cfg.hidden_size))
    attn = dropout(attn, cfg.hidden_dropout, keys[1], deterministic)
    x = self.attention_norm(attn + x)
    h = jax.nn.gelu(self.intermediate(x), approximate=False)
    h = dropout(self.output(h), cfg.hidden_dropout, keys[2], deterministic)
    return self.output_norm(h + x), probs


class Encoder(nnx.Module):
  """BERT/RoBERTa encoder; optional BERT pooler (dense + tanh on token 0).

  The pooler is not used by `__call__`; `pool()` applies it. It exists so a
  HF `BertModel`/`RobertaModel` checkpoint (which has one) round-trips, and
  so `SequenceClassifier` (BERT) can hold the HF pooler.
  """

  def __init__(
      self, config: EncoderConfig, *, rngs: nnx.Rngs, add_pooler: bool = False
  ):
    self.config = config
    self.remat = ""  # Layer remat policy (models/remat.py); '' = off.
    self.embeddings = Embeddings(config, rngs=rngs)
    self.layers = nnx.List(
        [Layer(config, rngs=rngs) for _ in range(config.num_layers)]
    )
    self.pooler = (
        dense(
            config.hidden_size,
            config.hidden_size,
            ("embed", None),
            config,
            rngs,
        )
        if add_pooler
        else None
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
  ) -> EncoderOutput:
    """Encodes a batch.

    Args:
      input_ids: [B, T] int token ids.
      attention_mask: [B, T] {0, 1}; 0 marks padding keys.
      token_type_ids: [B, T] int segment ids; zeros when None.
      deterministic: if False, apply dropout with `dropout_rng`.
      dropout_rng: PRNG key, required when `deterministic` is False.
      output_attentions: also return the attention probabilities.

    Returns:
      EncoderOutput.
    """
    if not deterministic and dropout_rng is None:
      raise ValueError("dropout_rng is required when deterministic=False.")
    if token_type_ids is None:
      token_type_ids = jnp.zeros_like(input_ids)
    n = len(self.layers)
    keys = (
        [None] * (n + 1)
        if deterministic
        else list(jax.random.split(dropout_rng, n + 1))
    )
    mask_bias = jnp.where(
        attention_mask[:, None, None, :] > 0, 0.0, jnp.finfo(jnp.float32).min
    ).astype(jnp.float32)
    x = self.embeddings(
        input_ids, token_type_ids, deterministic=deterministic, rng=keys[n]
    )
    hidden_states, attentions = [x], []
    call = remat_lib.layer_call(self.remat, deterministic)
    for layer, key in zip(self.layers, keys[:n]):
      x, probs = call(layer, x, mask_bias, key)
      hidden_states.append(x)
      attentions.append(probs)
    return EncoderOutput(
        last_hidden_state=x,
        hidden_states=tuple(hidden_states),
        attentions=tuple(attentions) if output_attentions else None,
    )

  def pool(self, last_hidden_state: jax.Array) -> jax.Array:
    """BERT pooler: tanh(dense(h[:, 0])) -> [B, D]."""
    if self.pooler is None:
      raise ValueError("This Encoder was built with add_pooler=False.")
    return jnp.tanh(self.pooler(last_hidden_state[:, 0]))
