r"""Evidence: does CoDIR beat KD and PKD? One resumable driver for all runs.

For each task (MRPC, STS-B, SST-2, in that order: cheapest first) it
fine-tunes the bundled all-MiniLM-L6-v2 teacher on the FULL training set
until the dev score stops improving (early stopping on periodic dev
evaluations; the best checkpoint's export `best/` is the teacher), then
distils 3-layer students (teacher layers 2, 4, 6) with kd, pkd, codir (bank)
and codir_inbatch over 5 seeds, each until its dev score stops improving.
On MRPC it adds the released-code variant and a lambda sweep (0.01, 1.0;
0.1 is the codir row) over 3 seeds.

  python experiments/evidence.py --out runs/evidence            # all runs
  python experiments/evidence.py --out runs/evidence --workers 2
  python experiments/evidence.py --out runs/evidence --report   # tables only

Resuming. Every run has its own workdir under --out; a finished run (its
summary.json) is never redone, an interrupted one resumes from its own
checkpoint (saved at every dev evaluation). Results are also recorded in
--results/evidence.json (committed), so a finished student run is not redone
even if --out is lost; a lost teacher is retrained (its record must match,
and a student record counts only beside the teacher it was distilled from).
Speed. On CPU the driver adds `--xla_flags` (default: Eigen dots, YNNPACK
off, 1.26x on the MRPC student step on an AVX2 CPU; XLA's generated code
held to AVX2) to XLA_FLAGS before JAX starts; every record stores the
XLA_FLAGS it ran with. Students read the teacher's outputs from a per-task
cache (evidence_plan: cost).

Worker processes (--workers, or several invocations) share the runs by
claim files in <out>/.claims/ (a dead worker's claim is taken over). Runs
go seed-major (seed 0 of every variant, then seed 1, ...): partial results
are paired. After every run: <results>/evidence.json, .md and .png.
The schedule is `evidence_plan.TASKS` (its docstring says why); every value
is stored in evidence.json. `--smoke` runs the same plan shape on a tiny
task (tests; pass --teacher and --data_dir).
"""

from __future__ import annotations

import argparse
import dataclasses
import fcntl
import functools
import json
import os
import subprocess
import sys
import time
from typing import Any, Sequence

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
  sys.path.insert(0, REPO)

import ml_collections  # noqa: E402

from codir_jax.data import tasks as tasks_lib  # noqa: E402
from experiments import evidence_configs as configs_lib  # noqa: E402
from experiments import evidence_plan as plan_lib  # noqa: E402
from experiments import evidence_stats as stats  # noqa: E402
from experiments import runs  # noqa: E402

DEFAULT_RESULTS = os.path.join(REPO, "experiments", "results")
DEFAULT_DATA_DIR = os.path.join(os.path.dirname(REPO), "shared", "data", "glue")
# XLA's Eigen dots instead of YNNPACK: the MRPC student step 1.56 vs 1.97 s
# on a 2-core AVX2 CPU (benchmarks/RESULTS_AVX2.md). An environment setting,
# not the recipe: each record stores its XLA_FLAGS.
EIGEN_DOTS = "--xla_cpu_experimental_ynn_fusion_type="
# XLA's own kernels held to AVX2 (a no-op on AVX2 CPUs): a machine that is
# lost takes its teacher checkpoints with it, and a teacher retrained on an
# AVX-512 machine should be the same model, or every recorded student of
# its task is stale (`execute` then stops the driver).
AVX2_CODEGEN = "--xla_cpu_max_isa=AVX2"
DEFAULT_XLA_FLAGS = f"{EIGEN_DOTS} {AVX2_CODEGEN}"
# Keys that name places (not the recipe hash) and the config of each run.
_PLACE_KEYS = configs_lib.PLACE_KEYS
run_config = configs_lib.run_config


# ----------------------------------------------------------------------------
# The driver.


@dataclasses.dataclass
class Paths:
  """Where runs go and what they read; `tasks` = the schedules."""

  out: str
  results: str
  data_dir: str
  base_teacher: str = ""
  tasks: dict | None = None


def _load_records(paths: Paths) -> dict[str, Any]:
  path = os.path.join(paths.results, "evidence.json")
  if not os.path.exists(path):
    return {}
  with open(path, encoding="utf-8") as f:
    return json.load(f).get("runs", {})


def _teacher_dir(paths: Paths, task: str) -> str:
  return os.path.join(paths.out, task, "teacher", "best")


def _config_of(run: plan_lib.Run, paths: Paths) -> ml_collections.ConfigDict:
  return run_config(
      run,
      data_dir=paths.data_dir,
      teacher_dir=_teacher_dir(paths, run.task),
      base_teacher=paths.base_teacher,
      tasks=paths.tasks,
      teacher_outputs=os.path.join(paths.out, "teacher_outputs"),
  )


def _done(run: plan_lib.Run, paths: Paths, records: dict) -> bool:
  """Finished here, or (students) recorded with the same recipe."""
  config = _config_of(run, paths)
  if runs.finished_summary(config, os.path.join(paths.out, run.name)):
    return True
  rec = records.get(run.name)
  if run.kind != "student" or rec is None:
    return False
  if not _same_teacher(rec, records.get(f"{run.task}/teacher")):
    return False
  if "config" in rec:  # Keys added to the code later, at default, agree.
    return not runs.config_differences(
        rec["config"], runs.recipe(config, _PLACE_KEYS)
    )
  return rec["config_hash"] == runs.config_hash(config, _PLACE_KEYS)


def _same_score(a: float, b: float) -> bool:
  """Two dev scores of one teacher (floats through JSON) agree."""
  return abs(a - b) <= 1e-6


def _same_teacher(student: dict, teacher: dict | None) -> bool:
  """A student record counts only beside the teacher it was distilled from.

  Each student record keeps its teacher's dev score (`teacher_score`); a
  teacher retrained after its checkpoint was lost may score differently
  (other hardware, other floats), and the old students then belong to no
  teacher.
  """
  score = student.get("teacher_score")
  return (
      teacher is not None
      and score is not None
      and _same_score(score, teacher["score"])
  )


def _record(run: plan_lib.Run, summary: dict, config, teacher_rec) -> dict:
  best = dict(summary.get("best_dev") or summary["dev"])
  rec = {
      "task": run.task,
      "kind": run.kind,
      "variant": run.label,
      "seed": run.seed,
      "score": float(best["score"]),
      "best_dev": best,
      "dev": summary["dev"],
      "steps": summary["steps"],
      "wall_s": float(summary["total_wall_s"]),
      "train_wall_s": float(summary["train_wall_s"]),
      "xla_flags": os.environ.get("XLA_FLAGS", ""),
      "cpu": runs.cpu_name(),
      "cores": runs.cores(),
      "config_hash": runs.config_hash(config, _PLACE_KEYS),
      "config": runs.recipe(config, _PLACE_KEYS),
      "code": runs.code_version(REPO),
  }
  if run.kind == "student":
    rec["teacher_dev"] = summary.get("teacher_dev")
    rec["speed"] = summary.get("speed")
    if teacher_rec is not None:
      rec["teacher_code"] = teacher_rec.get("code")
      rec["teacher_score"] = teacher_rec["score"]
  return rec


def execute(run: plan_lib.Run, paths: Paths, records: dict) -> dict:
  """Runs (or resumes) one run and returns its record."""
  config = _config_of(run, paths)
  workdir = os.path.join(paths.out, run.name)
  print(f"=== {run.name} ({time.strftime('%H:%M:%S')})", flush=True)
  summary = runs.run_one(config, workdir)
  teacher_rec = records.get(f"{run.task}/teacher")
  if run.kind == "student" and teacher_rec is not None:
    want = {k: v for k, v in teacher_rec["best_dev"].items() if k != "step"}
    runs.check_teacher_reload(want, summary, workdir)
  if run.kind == "teacher":
    old = records.get(run.name)
    new = float((summary.get("best_dev") or summary["dev"])["score"])
    if old is not None and not _same_score(old["score"], new):
      raise RuntimeError(
          f"{run.name}: the retrained teacher scores differently from the"
          f" recorded one ({old['score']}); students recorded with the old"
          " teacher would mix with new ones. Move evidence.json aside."
      )
  return _record(run, summary, config, teacher_rec)


def write_results(
    paths: Paths,
    records: dict,
    plan: Sequence[plan_lib.Run],
) -> dict:
  majority = {
      t: plan_lib.majority_score(t, paths.data_dir)
      for t in dict.fromkeys(r.task for r in plan)
  }
  results = plan_lib.summarize(
      records,
      plan,
      paths.tasks or plan_lib.TASKS,
      majority,
      source_of=functools.partial(runs.source_tree, REPO),
  )
  os.makedirs(paths.results, exist_ok=True)
  out = os.path.join(paths.results, "evidence.json")
  tmp = out + f".tmp{os.getpid()}"
  with open(tmp, "w", encoding="utf-8") as f:
    json.dump({**results, "runs": records}, f, indent=1, sort_keys=True)
  os.replace(tmp, out)
  with open(
      os.path.join(paths.results, "evidence.md"), "w", encoding="utf-8"
  ) as f:
    seeds = {r.seed for r in plan if r.kind == "student"}
    f.write(stats.markdown(results, seeds_planned=len(seeds)))
  stats.plot(results, os.path.join(paths.results, "evidence.png"))
  return results


def work(
    paths: Paths,
    plan: Sequence[plan_lib.Run],
    *,
    poll_s: float = 30.0,
    max_runs: int = 0,
) -> int:
  """Claims and runs pending runs until none is left; returns runs done."""
  done_here = 0
  while True:
    records = _load_records(paths)
    pending = [r for r in plan if not _done(r, paths, records)]
    if not pending or (max_runs and done_here >= max_runs):
      return done_here
    ready = [
        r
        for r in pending
        if r.kind == "teacher" or _done(plan_lib.teacher_of(r), paths, records)
    ]
    run = next((r for r in ready if runs.claim(paths.out, r.name)), None)
    if run is None:
      time.sleep(poll_s)  # Others hold the ready runs, or teachers train.
      continue
    try:
      rec = execute(run, paths, records)
    finally:
      runs.release(paths.out, run.name)
    add_record(paths, run.name, rec, plan)
    done_here += 1


def add_record(
    paths: Paths, name: str, rec: dict, plan: Sequence[plan_lib.Run]
) -> None:
  """Adds a record to evidence.json, locked: workers finish runs at about
  the same time, and an unlocked later write could drop an earlier record."""
  lock = os.path.join(paths.out, ".claims", "results.lock")
  os.makedirs(os.path.dirname(lock), exist_ok=True)
  with open(lock, "a", encoding="utf-8") as f:
    fcntl.flock(f, fcntl.LOCK_EX)  # Released when the file closes.
    records = _load_records(paths)
    records[name] = rec
    write_results(paths, records, plan)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--out", required=True, help="Run directories.")
  p.add_argument(
      "--results",
      default=DEFAULT_RESULTS,
      help="Where evidence.{json,md,png} go (committed).",
  )
  p.add_argument(
      "--data_dir",
      default=DEFAULT_DATA_DIR,
      help="GLUE root in the original TSV layout.",
  )
  p.add_argument(
      "--tasks",
      nargs="+",
      default=list(plan_lib.TASKS),
      choices=list(plan_lib.TASKS),
  )
  p.add_argument(
      "--teacher",
      default="",
      help="HF dir to fine-tune as teacher ('' = bundled).",
  )
  p.add_argument(
      "--smoke",
      action="store_true",
      help="Tiny schedule (tests): 64-example tasks, max_len 16.",
  )
  p.add_argument(
      "--seeds", nargs="+", type=int, default=list(plan_lib.MAIN_SEEDS)
  )
  p.add_argument("--variants", nargs="+", default=list(plan_lib.MAIN_VARIANTS))
  p.add_argument(
      "--workers",
      type=int,
      default=1,
      help="Worker processes started by this call.",
  )
  p.add_argument(
      "--max_runs",
      type=int,
      default=0,
      help="Stop after this many runs (0 = all).",
  )
  p.add_argument(
      "--report",
      action="store_true",
      help="Only rewrite the tables and plot from evidence.json.",
  )
  p.add_argument(
      "--xla_flags",
      default=DEFAULT_XLA_FLAGS,
      help="Added to XLA_FLAGS before JAX starts ('' = XLA's defaults).",
  )
  p.add_argument(
      "--jax_cache",
      default=None,
      help="Compilation cache (default <out>/jax_cache).",
  )
  return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict:
  a = parse_args(argv)
  flags = os.environ.get("XLA_FLAGS", "")
  if a.xla_flags and a.xla_flags not in flags:  # Inherited by the workers.
    os.environ["XLA_FLAGS"] = f"{flags} {a.xla_flags}".strip()
  runs.code_version(REPO)  # Pins the version of the code this process imported.
  paths = Paths(
      out=os.path.abspath(a.out),
      results=os.path.abspath(a.results),
      data_dir=os.path.abspath(a.data_dir),
      base_teacher=os.path.abspath(a.teacher) if a.teacher else "",
      tasks=plan_lib.SMOKE_TASKS if a.smoke else plan_lib.TASKS,
  )
  plan = plan_lib.make_plan(
      tuple(a.tasks), seeds=a.seeds, variants=a.variants, tasks=paths.tasks
  )
  if a.report:
    return write_results(paths, _load_records(paths), plan)
  for task in a.tasks:
    tasks_lib.get_task(task)
  cache = a.jax_cache or os.path.join(paths.out, "jax_cache")
  if a.workers > 1:
    child = [
        sys.executable,
        os.path.abspath(__file__),
        "--out",
        paths.out,
        "--results",
        paths.results,
        "--data_dir",
        paths.data_dir,
        "--teacher",
        paths.base_teacher,
        "--jax_cache",
        cache,
        "--max_runs",
        str(a.max_runs),
        "--tasks",
        *a.tasks,
        "--seeds",
        *map(str, a.seeds),
        "--variants",
        *a.variants,
    ] + (["--smoke"] if a.smoke else [])
    procs = [subprocess.Popen(child) for _ in range(a.workers)]
    codes = [p.wait() for p in procs]
    if any(codes):
      raise SystemExit(f"workers exited with {codes}")
  else:
    with runs.compilation_cache(cache):
      work(paths, plan, max_runs=a.max_runs)
  return write_results(paths, _load_records(paths), plan)


if __name__ == "__main__":
  main()
