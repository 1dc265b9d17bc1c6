"""AdamW with linear warm-up, linear decay and global-norm clipping.

Released code (METHOD.md): Adam (0.9, 0.98), eps 1e-6, weight decay 0.1,
polynomial (linear) decay to 0 with 6% warm-up. Decay is not applied to
biases and LayerNorm parameters (the usual BERT practice).
"""

from __future__ import annotations

import jax
import optax

from codir_jax.train.settings import OptimSettings


def schedule(s: OptimSettings) -> optax.Schedule:
  """0 -> lr over the warm-up, then linearly back to 0 at `total_steps`."""
  warmup = max(1, int(round(s.warmup_frac * s.total_steps)))
  decay = max(1, s.total_steps - warmup)
  return optax.join_schedules(
      [
          optax.linear_schedule(0.0, s.lr, warmup),
          optax.linear_schedule(s.lr, 0.0, decay),
      ],
      boundaries=[warmup],
  )


def _decay_mask(params):
  """True for weight matrices; False for biases, LayerNorm and 1-D params."""
  return jax.tree.map(lambda p: getattr(p, "ndim", 0) > 1, params)


def make_optimizer(s: OptimSettings) -> optax.GradientTransformation:
  if s.total_steps <= 0:
    raise ValueError(f"total_steps must be positive, got {s.total_steps}")
  if not 0.0 <= s.warmup_frac < 1.0:
    raise ValueError(
        f"config.optim.warmup_frac must be in [0, 1), got {s.warmup_frac}"
    )
  parts = []
  if s.clip_norm > 0:
    parts.append(optax.clip_by_global_norm(s.clip_norm))
  parts.append(
      optax.adamw(
          schedule(s),
          b1=s.b1,
          b2=s.b2,
          eps=s.eps,
          weight_decay=s.weight_decay,
          mask=_decay_mask,
      )
  )
  return optax.chain(*parts)
