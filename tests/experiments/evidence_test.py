"""experiments/evidence.py: the plan, the configs, the statistics, resume."""

import functools
import json
import os
import shutil
import time

import numpy as np
import pytest
from scipy import stats as scipy_stats

from tests.experiments import processes
from experiments import evidence  # noqa: E402  (REPO is on sys.path)
from experiments import evidence_plan as plan_lib  # noqa: E402
from experiments import evidence_stats  # noqa: E402
from experiments import runs  # noqa: E402


def test_paired_interval_matches_scipy_ttest_rel():
  rng = np.random.default_rng(0)
  base = rng.uniform(0.7, 0.8, size=5)
  other = base + rng.normal(0.01, 0.004, size=5)
  p = evidence_stats.paired(dict(enumerate(other)), dict(enumerate(base)))
  ci = scipy_stats.ttest_rel(other, base).confidence_interval(0.95)
  assert p["n"] == 5 and p["mean_diff"] == pytest.approx(
      float(np.mean(other - base)), abs=1e-12
  )
  np.testing.assert_allclose(p["ci95"], [ci.low, ci.high], rtol=1e-9)
  assert evidence_stats.verdict(p) == (
      "better beyond noise" if ci.low > 0 else "within noise"
  )


def test_paired_uses_only_shared_seeds_and_needs_two():
  p = evidence_stats.paired({0: 0.9, 1: 0.8, 7: 0.1}, {0: 0.85, 1: 0.8})
  assert p["seeds"] == [0, 1] and p["diffs"] == pytest.approx([0.05, 0.0])
  one = evidence_stats.paired({0: 0.9}, {0: 0.85})
  assert one["ci95"] is None and evidence_stats.verdict(one) == (
      "too few seeds"
  )


def _records(scores: dict[str, list[float]]) -> dict:
  """MRPC student records: variant -> one score per seed (teacher 0.84)."""
  recs = {
      "mrpc/teacher": {
          "score": 0.84,
          "best_dev": {"accuracy": 0.81, "score": 0.84},
          "steps": 10,
          "wall_s": 1.0,
      }
  }
  for name, values in scores.items():
    for seed, v in enumerate(values):
      recs[f"mrpc/{name}/seed{seed}"] = {"score": v, "wall_s": 1.0}
  return recs


def test_codir_is_paired_with_kd_and_pkd_and_answered_in_one_sentence():
  rng = np.random.default_rng(1)
  kd = rng.uniform(0.74, 0.78, size=5)
  scores = {
      "kd": kd,
      "pkd": kd + rng.normal(0.0, 0.002, size=5),
      "codir": kd + 0.02 + rng.normal(0.0, 0.002, size=5),
      "codir_inbatch": kd + rng.normal(0.0, 0.01, size=5),
  }
  plan = plan_lib.make_plan(("mrpc",), variants=tuple(scores))
  res = plan_lib.summarize(_records(scores), plan, plan_lib.TASKS)
  task = res["tasks"]["mrpc"]
  # Independent reference: the paired differences by hand.
  np.testing.assert_allclose(
      task["paired_vs_pkd"]["codir"]["diffs"],
      scores["codir"] - scores["pkd"],
      atol=1e-12,
  )
  assert "pkd" in task["paired_vs_kd"] and "kd" not in task["paired_vs_pkd"]
  assert "pkd" not in task["paired_vs_pkd"]
  said = evidence_stats.answer(task, "codir", seeds_planned=5)
  assert said.startswith("codir beats both kd and pkd beyond noise (")
  assert "5 paired seeds" in said
  assert evidence_stats.answer(task, "codir_inbatch", 5).startswith(
      "codir_inbatch beats neither kd nor pkd beyond noise"
  )
  # Worse than pkd beyond noise, better than kd: both are said.
  scores["pkd"] = scores["codir"] + 0.03 + rng.normal(0.0, 0.002, size=5)
  task = plan_lib.summarize(_records(scores), plan, plan_lib.TASKS)["tasks"]
  assert evidence_stats.answer(task["mrpc"], "codir", 5).startswith(
      "codir beats kd beyond noise but not pkd; it is worse than pkd"
  )
  # Fewer seeds than planned: provisional; one seed: no answer.
  two = {k: v[:2] for k, v in scores.items()}
  task = plan_lib.summarize(_records(two), plan, plan_lib.TASKS)["tasks"]
  assert evidence_stats.answer(task["mrpc"], "codir", 5).startswith(
      "Provisional, 2 of 5 seeds: codir"
  )
  one = {k: v[:1] for k, v in scores.items()}
  task = plan_lib.summarize(_records(one), plan, plan_lib.TASKS)["tasks"]
  assert "too few" in evidence_stats.answer(task["mrpc"], "codir", 5)
  md = evidence_stats.markdown(res, seeds_planned=5)
  assert "- codir beats both kd and pkd" in md and "Δ vs pkd" in md


def test_cpu_hours_count_each_runs_own_cores():
  recs = _records({"kd": [0.7, 0.71]})
  recs["mrpc/kd/seed0"].update(wall_s=3600.0, cores=1)  # Pinned to 1 core.
  recs["mrpc/kd/seed1"].update(wall_s=1800.0, cores=2)
  recs["mrpc/teacher"]["wall_s"] = 0.0  # Only the students count here ...
  plan = plan_lib.make_plan(("mrpc",), variants=("kd",))
  c = plan_lib.summarize(recs, plan, plan_lib.TASKS)["compute"]
  assert c["cpu_hours"] == pytest.approx(1.0 + 1.0)
  assert c["wall_hours"] == pytest.approx(1.5) and c["cores"] == [1, 2]
  # ... and a record without cores (made before they were stored) ran on
  # every core of this machine.
  del recs["mrpc/kd/seed0"]["cores"]
  c = plan_lib.summarize(recs, plan, plan_lib.TASKS)["compute"]
  assert c["cpu_hours"] == pytest.approx(1.0 * os.cpu_count() + 1.0)
  md = evidence_stats.markdown(
      plan_lib.summarize(recs, plan, plan_lib.TASKS), seeds_planned=5
  )
  assert f"({' or '.join(map(str, c['cores']))} cores a run)" in md


def test_runs_are_grouped_by_the_model_code_they_ran(tmp_path):
  repo = str(tmp_path)
  git = functools.partial(runs._git, repo)  # pylint: disable=protected-access
  git("init", "-q")
  for d, text in (("codir_jax", "a = 1"), ("configs", "c = 1"), ("x", "")):
    os.makedirs(os.path.join(repo, d))
    with open(os.path.join(repo, d, "m.py"), "w") as f:
      f.write(text)
  commits = []

  def commit(path, text):
    with open(os.path.join(repo, path), "w") as f:
      f.write(text)
    git("add", "-A")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", path)
    commits.append(git("rev-parse", "--short=12", "HEAD"))

  commit("x/m.py", "driver v1")
  commit("x/m.py", "driver v2")  # Outside codir_jax/ and configs/.
  commit("codir_jax/m.py", "a = 2")
  trees = [runs.source_tree(repo, c) for c in commits]
  assert trees[0] == trees[1] != trees[2]
  assert trees[0].count("+") == 1 and "unknown" not in trees
  assert runs.source_tree(repo, commits[0] + "-dirty") == "unknown"
  assert runs.source_tree(repo, "0" * 12) == "unknown"

  recs = _records({"kd": [0.7, 0.71]})
  for rec, c in zip(recs.values(), commits):
    rec["code"] = c
  plan = plan_lib.make_plan(("mrpc",), variants=("kd",))
  src = lambda code: runs.source_tree(repo, code)
  res = plan_lib.summarize(recs, plan, plan_lib.TASKS, source_of=src)
  assert res["compute"]["source"] == {trees[0]: 2, trees[2]: 1}
  md = evidence_stats.markdown(res, seeds_planned=5)
  assert f"{trees[0]} (2 runs), {trees[2]} (1 runs)." in md
  for rec in recs.values():
    rec["code"] = commits[1]
  res = plan_lib.summarize(recs, plan, plan_lib.TASKS, source_of=src)
  assert "one version for every run" in evidence_stats.markdown(res, 5)


def test_plan_has_every_run_once_in_seed_major_order():
  plan = plan_lib.make_plan(("mrpc", "stsb", "sst2"))
  names = [r.name for r in plan]
  assert len(names) == len(set(names))
  assert [r.name for r in plan if r.kind == "teacher"] == [
      "mrpc/teacher",
      "stsb/teacher",
      "sst2/teacher",
  ]
  # 3 tasks x 4 variants x 5 seeds, plus MRPC's released and two lambdas
  # over 3 seeds.
  assert len(plan) == 3 + 3 * 4 * 5 + 3 * 3
  mrpc = [r for r in plan if r.task == "mrpc" and r.kind == "student"]
  assert [r.seed for r in mrpc] == sorted(r.seed for r in mrpc)
  assert {r.label for r in mrpc} == {
      "kd",
      "pkd",
      "codir",
      "codir_inbatch",
      "released",
      "codir_lam0.01",
      "codir_lam1",
  }


def test_run_configs_carry_the_schedule_and_the_released_recipe():
  sched = plan_lib.TASKS["mrpc"]
  released = plan_lib.Run(
      "mrpc", "student", "codir", seed=2, lam=1.6, released=True
  )
  c = evidence.run_config(released, data_dir="/d", teacher_dir="/t")
  assert (c.mode, c.seed, c.teacher.path) == ("distill", 2, "/t")
  assert c.loss.objective == "nce" and c.loss.pooling == "first"
  assert c.loss.crd_batch_scaled and c.bank.shared_negatives
  assert c.optim.clip_norm == 0.0 and c.loss.crd_weight == 1.6
  steps_per_epoch = -(-sched.train_size // sched.batch_size)
  assert c.log.eval_every_steps == steps_per_epoch // 2
  assert c.log.eval_patience == sched.student_patience
  assert not c.eval.compare_teacher  # Only kd seed 0 times the teacher.
  teacher = evidence.run_config(
      plan_lib.Run("sst2", "teacher"), data_dir="/d", teacher_dir=""
  )
  assert teacher.mode == "finetune_teacher" and teacher.task.train_limit == 0
  # Students read the teacher's cached outputs; where they live is a place.
  assert c.teacher.cache_outputs and not teacher.teacher.cache_outputs
  moved = evidence.run_config(
      released, data_dir="/d", teacher_dir="/t", teacher_outputs="/o"
  )
  assert moved.teacher.cache_dir == "/o"
  place = evidence._PLACE_KEYS  # pylint: disable=protected-access
  assert runs.config_hash(moved, place) == runs.config_hash(c, place)
  student = evidence.run_config(
      plan_lib.Run("sst2", "student", "kd"), data_dir="/d", teacher_dir="/t"
  )
  assert student.task.train_limit == 20000 and student.eval.compare_teacher
  assert runs.config_hash(student) != runs.config_hash(
      evidence.run_config(
          plan_lib.Run("sst2", "student", "kd", seed=1),
          data_dir="/d",
          teacher_dir="/t",
      )
  )


@pytest.mark.slow
def test_smoke_plan_runs_reports_and_never_redoes_a_run(tmp_path, tiny_glue):
  teacher, data = tiny_glue
  out, res = tmp_path / "runs", tmp_path / "results"
  argv = [
      "--out",
      str(out),
      "--results",
      str(res),
      "--smoke",
      "--tasks",
      "sst2",
      "--teacher",
      teacher,
      "--data_dir",
      data,
      "--seeds",
      "0",
      "1",
      "--variants",
      "kd",
      "codir",
  ]
  # In a child process, which compiles the runs' train steps fast.
  processes.run_script("evidence.py", argv)
  with open(res / "evidence.json", encoding="utf-8") as f:
    stored = json.load(f)
  task = stored["tasks"]["sst2"]
  assert task["teacher"]["score"] == stored["runs"]["sst2/teacher"]["score"]
  assert task["variants"]["kd"]["seeds"] == [0, 1]
  assert len(task["variants"]["codir"]["scores"]) == 2
  p = task["paired_vs_kd"]["codir"]
  assert p["n"] == 2 and p["ci95"] is not None
  assert stored["compute"]["runs_done"] == 5
  # The driver's default --xla_flags reached the runs (Eigen dots).
  assert stored["compute"]["xla_flags"] == [
      " ".join([*processes.FAST_COMPILE, evidence.DEFAULT_XLA_FLAGS])
  ]
  assert (res / "evidence.png").exists()
  assert "| codir | 2 |" in (res / "evidence.md").read_text()

  # The majority-class floor, from the TSVs by hand (header, then
  # sentence<TAB>label).
  def labels(split):
    path = os.path.join(data, "SST-2", f"{split}.tsv")
    with open(path, encoding="utf-8") as f:
      rows = f.read().splitlines()[1:]
    return np.array([int(r.split("\t")[-1]) for r in rows])

  guess = np.bincount(labels("train")).argmax()
  assert task["majority_score"] == pytest.approx(
      float(np.mean(labels("dev") == guess)), abs=1e-12
  )
  assert "| majority class |" in (res / "evidence.md").read_text()

  # Nothing is redone: not with the run dirs, not with one student's run
  # dir gone (its record stands), and its summary stays untouched.
  stamp = os.path.getmtime(out / "sst2" / "kd" / "seed0" / "summary.json")
  shutil.rmtree(out / "sst2" / "codir" / "seed1")
  plan = plan_lib.make_plan(
      ("sst2",),
      seeds=(0, 1),
      variants=("kd", "codir"),
      tasks=plan_lib.SMOKE_TASKS,
  )
  paths = evidence.Paths(
      out=str(out),
      results=str(res),
      data_dir=data,
      base_teacher=teacher,
      tasks=plan_lib.SMOKE_TASKS,
  )
  assert evidence.work(paths, plan, poll_s=0.1) == 0
  assert (
      os.path.getmtime(out / "sst2" / "kd" / "seed0" / "summary.json") == stamp
  )
  assert not (out / "sst2" / "codir" / "seed1").exists()

  # A record counts only beside its own teacher: once the teacher record
  # changes (retrained elsewhere), the gone run is pending again.
  records = stored["runs"]
  student = next(r for r in plan if r.name == "sst2/codir/seed1")
  assert evidence._done(student, paths, records)
  records["sst2/teacher"]["score"] += 1e-3
  assert not evidence._done(student, paths, records)


def test_a_live_claim_blocks_and_a_dead_one_is_taken_over(tmp_path):
  assert runs.claim(str(tmp_path), "mrpc/kd/seed0")
  assert not runs.claim(str(tmp_path), "mrpc/kd/seed0")
  path = tmp_path / ".claims" / "mrpc__kd__seed0"
  path.write_text("999999999")  # No such process.
  assert runs.claim(str(tmp_path), "mrpc/kd/seed0")


def test_keys_added_later_at_their_default_do_not_change_the_recipe():
  from experiments import runs  # pylint: disable=g-import-not-at-top
  from configs import base  # pylint: disable=g-import-not-at-top

  new = runs.config_dict(base.get_base_config())
  stored = json.loads(json.dumps(new))
  del stored["log"]["eval_patience"]  # A run made before the key existed.
  assert runs.config_differences(stored, new) == []
  new["log"]["eval_patience"] = 3  # ... but not when it is switched on.
  assert runs.config_differences(stored, new) == ["log.eval_patience"]
  stored["optim"]["lr"] = 1.0
  assert runs.config_differences(stored, new) == [
      "log.eval_patience",
      "optim.lr",
  ]


def test_workers_finishing_together_keep_both_records(tmp_path, monkeypatch):
  """Two workers add records at once: the lock keeps both (unlocked, each
  reads the old records during the other's slow write and one is lost)."""
  import threading  # pylint: disable=g-import-not-at-top

  paths = evidence.Paths(
      out=str(tmp_path / "runs"), results=str(tmp_path), data_dir=""
  )
  (tmp_path / "evidence.json").write_text(json.dumps({"runs": {"a": 0}}))

  def slow_write(paths, records, plan):
    del plan
    time.sleep(0.3)  # The other worker reads the records meanwhile.
    with open(os.path.join(paths.results, "evidence.json"), "w") as f:
      json.dump({"runs": records}, f)

  monkeypatch.setattr(evidence, "write_results", slow_write)
  workers = [
      threading.Thread(target=evidence.add_record, args=(paths, n, 1, []))
      for n in ("b", "c")
  ]
  for w in workers:
    w.start()
  for w in workers:
    w.join()
  stored = json.loads((tmp_path / "evidence.json").read_text())
  assert stored["runs"] == {"a": 0, "b": 1, "c": 1}
