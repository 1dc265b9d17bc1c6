"""Helpers shared by config files: variant strings after the colon.

`--config configs/sst2_codir.py:variant=pkd,runlocal` reaches the config's
`get_config(arg)` as the string "variant=pkd,runlocal"; `parse_arg` turns it
into a ConfigDict with typed defaults (idea from big_vision's
configs/common.py; this is our own code).
"""

from __future__ import annotations

import ml_collections


def parse_arg(arg: str | None, **defaults) -> ml_collections.ConfigDict:
  """Parses "k1=v1,flag,k2=v2" against typed `defaults`.

  A bare `flag` sets a bool default to True. Values are converted to the
  default's type; an unknown key raises, so a typo in a variant never
  silently falls back to a default.
  """
  out = ml_collections.ConfigDict(defaults)
  if not arg:
    return out
  for item in arg.split(","):
    item = item.strip()
    if not item:
      continue
    key, eq, raw = item.partition("=")
    key = key.strip()
    if key not in defaults:
      raise ValueError(
          f"unknown config argument {key!r} in {arg!r}; known:"
          f" {sorted(defaults)}"
      )
    default = defaults[key]
    if not eq:
      if not isinstance(default, bool):
        raise ValueError(f"config argument {key!r} needs a value ({key}=...)")
      out[key] = True
    elif isinstance(default, bool):
      if raw.lower() not in ("true", "false", "1", "0"):
        raise ValueError(f"config argument {key}={raw!r} is not a bool")
      out[key] = raw.lower() in ("true", "1")
    else:
      out[key] = type(default)(raw)
  return out
