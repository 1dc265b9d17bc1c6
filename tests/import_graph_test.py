"""The package's import graph: no cycles, a shallow train/, small files.

Imports are read from the source with `ast` (module level and inside
functions alike), so a lazy import inside a function counts too.
"""

import ast
import os

import pytest

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_PKG = os.path.join(_ROOT, "codir_jax")


def _modules() -> dict[str, str]:
  """Dotted module name -> file path, for every module of codir_jax."""
  out = {}
  for folder, _, files in os.walk(_PKG):
    for name in files:
      if name.endswith(".py"):
        path = os.path.join(folder, name)
        rel = os.path.relpath(path, _ROOT)[:-3].replace(os.sep, ".")
        out[rel.removesuffix(".__init__")] = path
  return out


def _imports(path: str, modules: dict[str, str]) -> set[str]:
  """The codir_jax modules `path` imports (a package counts as itself)."""
  with open(path, encoding="utf-8") as f:
    tree = ast.parse(f.read())
  found = set()
  for node in ast.walk(tree):
    names = []
    if isinstance(node, ast.Import):
      names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module:
      names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
    for n in names:
      if n in modules:
        found.add(n)
  return found


@pytest.fixture(scope="module")
def graph():
  modules = _modules()
  return {m: _imports(p, modules) - {m} for m, p in modules.items()}


def _packages_only(graph, m):
  """Edges of `m` without the package __init__ re-export hops."""
  return {d for d in graph[m] if not (m.startswith(d + "."))}


def test_no_import_cycle(graph):
  state = {}

  def visit(m, stack):
    state[m] = "open"
    for d in _packages_only(graph, m):
      if state.get(d) == "open":
        raise AssertionError(" -> ".join(stack + [m, d]))
      if d not in state:
        visit(d, stack + [m])
    state[m] = "done"

  for m in sorted(graph):
    if m not in state:
      visit(m, [])


def test_train_is_at_most_four_levels_deep(graph):
  train = {m for m in graph if m.startswith("codir_jax.train.")}

  def depth(m):
    inner = [d for d in graph[m] if d in train]
    return 1 + max((depth(d) for d in inner), default=0)

  depths = {m: depth(m) for m in train}
  assert max(depths.values()) <= 4, sorted(depths.items(), key=lambda x: -x[1])


def test_run_builders_do_not_import_each_other(graph):
  glue, pre = "codir_jax.train.glue_run", "codir_jax.train.pretrain_run"
  assert pre not in graph[glue] and glue not in graph[pre]


def test_only_settings_reads_the_config_dict_in_train():
  folder = os.path.join(_PKG, "train")
  readers = []
  for name in sorted(os.listdir(folder)):
    if name.endswith(".py") and name != "settings.py":
      with open(os.path.join(folder, name), encoding="utf-8") as f:
        tree = ast.parse(f.read())
      for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "config"
        ):
          readers.append(f"{name}: config.{node.attr}")
  assert not readers, readers


def test_every_module_is_at_most_400_lines():
  long = {}
  for path in _modules().values():
    with open(path, encoding="utf-8") as f:
      n = sum(1 for _ in f)
    if n > 400:
      long[os.path.relpath(path, _ROOT)] = n
  assert not long, long
