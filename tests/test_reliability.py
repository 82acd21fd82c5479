"""Crash safety and bad state: SIGKILL + resume, SIGTERM / SIGINT saves, the workdir lock, the NaN
guard, corrupted checkpoints."""
import dataclasses
import errno
import glob
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import ROOT, tiny_config
from mnistgen_jax import checkpoint, configs, errors, files, models, runs, trainer
from mnistgen_jax import train as train_lib
from mnistgen_jax.models import registry

KILL_RUN = dict(model="vae", train_size=2048, test_size=200, batch_size=32, num_epochs=3,
                log_every=4, checkpoint_every_steps=4, keep_checkpoints=2, hidden="64",
                latent_dim=4)


def _train_cmd(workdir, **overrides):
  flags = [f"--{k}={v}" for k, v in {**KILL_RUN, **overrides}.items()]
  return [sys.executable, "-m", "experiments.train", f"--workdir={workdir}", "--noevaluate", *flags]


def _checkpoint_steps(workdir) -> list[int]:
  return [int(os.path.basename(p)) for p in glob.glob(str(workdir / "checkpoints" / "[0-9]*"))
          if os.path.basename(p).isdigit()]


def _assert_same(a, b):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume_equals_an_uninterrupted_run(tmp_path):
  seed = random.randrange(10**6)
  rng = random.Random(seed)
  workdir = tmp_path / "killed"
  for attempt in range(2):  # Killed twice, each time after at least one checkpoint exists.
    proc = subprocess.Popen(_train_cmd(workdir), cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    # The second kill waits for a checkpoint this process wrote (it deleted an old one meanwhile).
    newest = max(_checkpoint_steps(workdir), default=0)
    while max(_checkpoint_steps(workdir), default=0) <= newest and proc.poll() is None:
      time.sleep(0.02)
    time.sleep(rng.uniform(0.0, 1.5))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    ckpt = checkpoint.Checkpointer(str(workdir), 2)
    steps = list(ckpt.manager.all_steps())
    ckpt.close()
    assert steps, f"no checkpoint after the kill (random seed {seed})"
    digests = json.loads((workdir / "checkpoint_digests.json").read_text())
    for step in steps:  # Every checkpoint left behind is readable, or its save was cut off
      if digests.get(str(step)) != checkpoint.PENDING:  # before its digest (set aside on resume).
        runs.restore_run(str(workdir), step)

  finish = subprocess.run(_train_cmd(workdir), cwd=ROOT, capture_output=True, text=True)
  assert finish.returncode == 0, finish.stderr[-2000:]
  assert "resumed from" in finish.stdout
  reference = tmp_path / "uninterrupted"
  config = configs.get_config(**{**KILL_RUN, "hidden": (64,)})
  trainer.train_and_evaluate(config, str(reference), print_fn=lambda s: None)
  killed_state = runs.restore_run(str(workdir))[3]
  reference_state = runs.restore_run(str(reference))[3]
  assert int(killed_state.step) == int(reference_state.step) == 192
  _assert_same(killed_state.params, reference_state.params)  # Bitwise, random seed {seed}.
  _assert_same(killed_state.opt_state, reference_state.opt_state)


def test_old_checkpoints_leave_by_rename_so_a_kill_mid_delete_leaves_no_broken_step(tmp_path):
  # Deleting in place (orbax's default) and being killed half-way left a step folder without its
  # metadata that still counted as a checkpoint and failed its digests (CI, stop 22).
  state = {"w": jnp.arange(6.0)}
  ckpt = checkpoint.Checkpointer(str(tmp_path), keep=2)
  for step in (1, 2, 3):
    ckpt.save(step, {"w": state["w"] * step}, metrics={"loss": float(10 - step)})
  deleted = tmp_path / "checkpoints" / checkpoint.DELETED_SUBDIR
  assert sorted(ckpt.manager.all_steps()) == [2, 3]
  assert not deleted.exists()  # Emptied once the rename is done.
  # What a kill during our emptying leaves: a half-emptied step folder under .deleted.
  (deleted / "4" / "default").mkdir(parents=True)
  (deleted / "4" / "default" / "partial").write_bytes(b"x")
  ckpt.close()
  ckpt = checkpoint.Checkpointer(str(tmp_path), keep=2)
  assert sorted(ckpt.manager.all_steps()) == [2, 3]  # Not a checkpoint.
  np.testing.assert_array_equal(ckpt.restore(state, 3)["w"], np.arange(6.0) * 3)
  ckpt.save(4, {"w": state["w"] * 4}, metrics={"loss": 6.0})
  assert sorted(ckpt.manager.all_steps()) == [3, 4] and not deleted.exists()
  ckpt.close()


def _wait_for_step(proc, workdir, step: int) -> None:
  """Returns once workdir's metrics.jsonl has logged `step` (no wall-clock limit: a busy machine
  only waits longer); fails if the process ends first."""
  path = workdir / "metrics.jsonl"
  while proc.poll() is None:
    if path.exists():
      with open(path) as f:
        logged = [json.loads(line)["step"] for line in f if line.rstrip().endswith("}")]
      if logged and max(logged) >= step:
        return
    time.sleep(0.05)
  pytest.fail(f"the run ended (exit {proc.returncode}) before logging step {step}")


def _latest_step(workdir) -> int:
  ckpt = checkpoint.Checkpointer(str(workdir), 2)
  try:
    return ckpt.latest_step()
  finally:
    ckpt.close()


def _stopped_step(stderr_file, sig) -> int:
  """The step named by the one line a run stopped by `sig` prints (no traceback allowed)."""
  stderr_file.seek(0)
  lines = [line for line in stderr_file.read().splitlines() if line.strip()]
  assert not any("Traceback" in line for line in lines), lines
  prefix = f"stopped: {sig.name} received: stopped after step "
  stopped = [line for line in lines if line.startswith(prefix)]
  assert len(stopped) == 1, lines
  return int(stopped[0][len(prefix):].split("/")[0])


@pytest.mark.slow
def test_one_run_owns_a_workdir_and_sigterm_sigint_save_what_resume_continues(tmp_path):
  # Checkpoints at epoch ends only (a mid-epoch one is the signal's), and enough steps that a
  # signal sent at step 3 comes long before the end.
  epoch_checkpoints = dict(checkpoint_every_steps=0, num_epochs=20)
  logs = []

  def start(workdir, **overrides):
    logs.append(open(tmp_path / f"stderr_{len(logs)}.txt", "w+"))
    return subprocess.Popen(_train_cmd(workdir, **{**epoch_checkpoints, **overrides}), cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=logs[-1], text=True)

  # While a (long) run trains, a second one on its workdir is refused, naming the holder; SIGTERM
  # then stops the holder with one line, after saving the step it reached.
  owned = tmp_path / "owned"
  proc = start(owned, num_epochs=100000)
  _wait_for_step(proc, owned, 3)
  second = subprocess.run(_train_cmd(owned, **{**epoch_checkpoints, "num_epochs": 100000}),
                          cwd=ROOT, capture_output=True, text=True)
  assert second.returncode == 2, second.stderr[-2000:]
  assert second.stderr.strip().splitlines()[-1].startswith(
      f"error: {owned} is in use by a run of PID {proc.pid} on "), second.stderr[-2000:]
  proc.send_signal(signal.SIGTERM)
  assert proc.wait() == 128 + signal.SIGTERM  # The shell's convention (a plain kill: -15).
  step = _stopped_step(logs[-1], signal.SIGTERM)
  assert step >= 3 and _latest_step(owned) == step  # That very step was saved.

  # SIGINT, then SIGKILL (uncatchable: the OS releases the lock with the process, so it never
  # goes stale), then the same command to the end: bitwise the uninterrupted run.
  workdir, saved = tmp_path / "stopped", 0
  proc = start(workdir)
  _wait_for_step(proc, workdir, 3)
  proc.send_signal(signal.SIGINT)
  assert proc.wait() == 128 + signal.SIGINT
  saved = _stopped_step(logs[-1], signal.SIGINT)
  assert saved >= 3 and _latest_step(workdir) == saved
  proc = start(workdir)
  _wait_for_step(proc, workdir, saved + 2)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  finish = subprocess.run(_train_cmd(workdir, **epoch_checkpoints), cwd=ROOT,
                          capture_output=True, text=True)
  assert finish.returncode == 0, finish.stderr[-2000:]
  for f in logs:
    f.close()
  reference = tmp_path / "uninterrupted"
  config = configs.get_config(**{**KILL_RUN, "hidden": (64,), **epoch_checkpoints})
  trainer.train_and_evaluate(config, str(reference), print_fn=lambda s: None)
  stopped_state = runs.restore_run(str(workdir))[3]
  reference_state = runs.restore_run(str(reference))[3]
  assert int(stopped_state.step) == int(reference_state.step) == 20 * 64
  _assert_same(stopped_state.params, reference_state.params)
  _assert_same(stopped_state.opt_state, reference_state.opt_state)


@pytest.mark.slow
def test_an_unwritable_workdir_is_refused_in_one_line(tmp_path):
  blocker = tmp_path / "a_file"
  blocker.write_text("not a folder")
  proc = subprocess.run(_train_cmd(blocker / "run"), cwd=ROOT, capture_output=True, text=True)
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines() == [
      f"error: cannot write in --workdir={blocker / 'run'} (Not a directory); pass a writable "
      "folder"]
  assert blocker.read_text() == "not a folder"
  proc = subprocess.run(_train_cmd(blocker), cwd=ROOT, capture_output=True, text=True)
  assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
      f"error: --workdir={blocker} is a file, not a folder; pass a folder"]
  assert blocker.read_text() == "not a folder"


def _poisoned_step(model, tx, config):
  """The usual step, except that from step 6 on the KL term and the parameters become NaN."""
  step = train_lib.make_train_step(model, tx)

  def poisoned(state, x, y):
    new, metrics = step(state, x, y)
    poison = jnp.where(state.step >= 5, jnp.nan, 1.0)
    metrics = dict(metrics, kl=metrics["kl"] * poison)
    return new.replace(params=jax.tree.map(lambda p: p * poison, new.params)), metrics
  return poisoned


@pytest.mark.slow
def test_nan_guard_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
  vae = registry.get("vae")
  class PoisonedTraining(models.Training):
    def step(self, model, tx, config):
      return _poisoned_step(model, tx, config)

  family = dataclasses.replace(vae, training=PoisonedTraining())
  monkeypatch.setitem(registry._FAMILIES, "vae", family)
  config = tiny_config("vae", num_epochs=3)  # 4 steps per epoch: a checkpoint at step 4.
  with pytest.raises(trainer.TrainingError) as error:
    trainer.train_and_evaluate(config, str(tmp_path), print_fn=lambda s: None)
  assert str(error.value) == (
      "the training loss term 'kl' is nan at step 6; training stopped and nothing after it was "
      "saved: the latest checkpoint (step 4) is the last good one and stays; try a lower "
      "--learning_rate")
  ckpt = checkpoint.Checkpointer(str(tmp_path), 3)
  assert list(ckpt.manager.all_steps()) == [4]
  ckpt.close()
  state = runs.restore_run(str(tmp_path))[3]
  assert all(np.isfinite(np.asarray(p)).all() for p in jax.tree.leaves(state.params))


@pytest.mark.slow
def test_a_diverging_run_ends_with_one_clear_line_and_leaves_its_workdir_free(tmp_path):
  command = [sys.executable, "-m", "experiments.train", "--model=vae", f"--workdir={tmp_path}",
             "--train_size=256", "--test_size=200", "--batch_size=64", "--num_epochs=2",
             "--log_every=2", "--hidden=64", "--latent_dim=4", "--noevaluate"]
  proc = subprocess.run(command + ["--learning_rate=1"], cwd=ROOT, capture_output=True, text=True)
  assert proc.returncode == 2
  last = proc.stderr.strip().splitlines()[-1]
  assert last.startswith("error: the training loss term ") and last.endswith(
      "no checkpoint was written; try a lower --learning_rate"), last
  assert not glob.glob(str(tmp_path / "checkpoints" / "[0-9]*"))
  # No checkpoint, no config.json: doing what the line says, in the same workdir, is not refused.
  assert not (tmp_path / "config.json").exists()
  proc = subprocess.run(command + ["--learning_rate=1e-3"], cwd=ROOT, capture_output=True,
                        text=True)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert json.loads((tmp_path / "config.json").read_text())["train"]["learning_rate"] == 1e-3


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("run")
  trainer.train_and_evaluate(tiny_config("vae"), str(workdir), print_fn=lambda s: None)
  return workdir


def _largest_data_file(step_dir):
  files = [f for f in glob.glob(os.path.join(step_dir, "default", "**", "*"), recursive=True)
           if os.path.isfile(f) and os.sep + "d" + os.sep in f]
  return max(files, key=os.path.getsize)


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["truncate", "flip_bytes", "metadata", "delete"])
def test_corrupted_checkpoint_is_refused_and_left_alone(finished_run, tmp_path, damage):
  workdir = tmp_path / "run"
  shutil.copytree(finished_run, workdir)
  step_dir = str(workdir / "checkpoints" / "8")
  victim = _largest_data_file(step_dir)
  if damage == "truncate":
    os.truncate(victim, os.path.getsize(victim) // 2)
  elif damage == "flip_bytes":  # Same size: only a checksum can tell.
    with open(victim, "r+b") as f:
      f.seek(os.path.getsize(victim) // 2)
      byte = f.read(1)
      f.seek(-1, os.SEEK_CUR)
      f.write(bytes([byte[0] ^ 0xFF]))
  elif damage == "metadata":
    with open(os.path.join(step_dir, "default", "_METADATA"), "w") as f:
      f.write("{not json")
  else:
    os.remove(victim)
  before = {p: os.path.getmtime(p) for p in glob.glob(str(workdir / "**"), recursive=True)}
  message = f"checkpoint {step_dir} is corrupted"
  with pytest.raises(checkpoint.CheckpointError, match=message):
    runs.restore_run(str(workdir))
  with pytest.raises(checkpoint.CheckpointError, match=message):  # Resuming refuses too...
    trainer.train_and_evaluate(tiny_config("vae", num_epochs=3), str(workdir),
                               print_fn=lambda s: None)
  after = {p: os.path.getmtime(p) for p in glob.glob(str(workdir / "**"), recursive=True)}
  assert after == before  # ...and writes nothing.
  shutil.rmtree(step_dir)  # The fix the message names: resume from the earlier checkpoint.
  state = runs.restore_run(str(workdir))[3]
  assert int(state.step) == 4


@pytest.mark.slow
def test_binary_reports_a_corrupted_checkpoint_in_one_line(finished_run, tmp_path):
  workdir = tmp_path / "run"
  shutil.copytree(finished_run, workdir)
  os.truncate(_largest_data_file(str(workdir / "checkpoints" / "8")), 10)
  proc = subprocess.run([sys.executable, "-m", "experiments.generate", f"--workdir={workdir}",
                         f"--out={tmp_path / 'x.png'}"], cwd=ROOT, capture_output=True, text=True)
  assert proc.returncode == 2
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith(f"error: checkpoint {workdir}/checkpoints/8 is "
                                                 "corrupted"), proc.stderr[-2000:]


@pytest.mark.slow
def test_a_full_disk_mid_run_is_one_line_and_keeps_the_last_checkpoint(tmp_path):
  # The second checkpoint save fails as a full disk does (inside orbax, wrapped); the run must
  # stop with one line saying what to do, and leave the first checkpoint intact for the resume.
  workdir = tmp_path / "run"
  script = (
      "import errno, sys\n"
      "from mnistgen_jax import checkpoint\n"
      "save, calls = checkpoint.Checkpointer.save, []\n"
      "def full_disk(self, step, state, metrics=None):\n"
      "  calls.append(step)\n"
      "  if len(calls) == 2:\n"
      "    try:\n"
      "      raise OSError(errno.ENOSPC, 'No space left on device', self.directory)\n"
      "    except OSError as e:\n"
      "      raise RuntimeError('orbax: save failed') from e\n"
      "  return save(self, step, state, metrics)\n"
      "checkpoint.Checkpointer.save = full_disk\n"
      f"sys.argv = ['train'] + {_train_cmd(workdir)[3:]!r}\n"  # Read when the flags are defined.
      "from experiments import train\n"
      "train.run()\n")
  proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True)
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert proc.stderr.strip().splitlines()[-1:] == [
      f"error: No space left on device: {workdir}/checkpoints; free some space, then run the same "
      "command again: it resumes from its last checkpoint"], proc.stderr[-2000:]
  assert "Traceback" not in proc.stderr
  state = runs.restore_run(str(workdir))[3]
  assert int(state.step) == 4  # The first checkpoint (every 4 steps), readable.
  assert not glob.glob(str(workdir / "*.tmp*"))


def test_write_atomically_leaves_the_old_file_and_no_temporary_one(tmp_path):
  target = tmp_path / "metrics.jsonl"
  target.write_text("old")

  def cut(path):
    with open(path, "w") as f:
      f.write("half")
    raise OSError(errno.ENOSPC, "No space left on device")
  with pytest.raises(OSError):
    files.write_atomically(str(target), cut)
  assert target.read_text() == "old" and os.listdir(tmp_path) == ["metrics.jsonl"]
  error = OSError(errno.ENOSPC, "No space left on device", "/w/x")
  wrapped = RuntimeError("orbax")
  wrapped.__cause__ = error
  assert errors.os_error_in(wrapped) is error and errors.os_error_in(RuntimeError("x")) is None
  assert errors.os_error_line(error, "retry") == (
      "No space left on device: /w/x; free some space, then retry")


@pytest.mark.slow
def test_evaluate_refuses_before_its_work_when_eval_json_cannot_be_written(finished_run, tmp_path):
  workdir = tmp_path / "run"
  shutil.copytree(finished_run, workdir)
  os.remove(workdir / "eval.json")
  os.mkdir(workdir / "eval.json")  # What root cannot be kept from writing: a path taken.
  proc = subprocess.run([sys.executable, "-m", "experiments.evaluate", f"--workdir={workdir}"],
                        cwd=ROOT, capture_output=True, text=True)
  assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
      f"error: --workdir={workdir}/eval.json is a directory: pass a file path"], proc.stderr[-2000:]


@pytest.mark.slow
def test_evaluate_is_refused_in_one_line_while_training_holds_the_run(finished_run, tmp_path):
  workdir = tmp_path / "run"
  shutil.copytree(finished_run, workdir)
  before = (workdir / "eval.json").read_text()
  with runs.lock(str(workdir)):  # As a training process holds it.
    proc = subprocess.run([sys.executable, "-m", "experiments.evaluate", f"--workdir={workdir}",
                           "--num_samples=100", "--iwae_samples=0", "--nocalibration"],
                          cwd=ROOT, capture_output=True, text=True)
  lines = proc.stderr.strip().splitlines()
  assert proc.returncode == 2 and len(lines) == 1 and "is in use by a run of PID" in lines[0], \
      proc.stderr[-2000:]
  assert (workdir / "eval.json").read_text() == before


@pytest.mark.slow
def test_resume_without_the_digests_file_is_refused_and_corrupted_weights_never_blessed(
    finished_run, tmp_path):
  workdir = tmp_path / "run"
  shutil.copytree(finished_run, workdir)
  os.truncate(_largest_data_file(str(workdir / "checkpoints" / "8")), 10)
  os.remove(workdir / "checkpoint_digests.json")
  config = tiny_config("vae", num_epochs=3)
  with pytest.raises(checkpoint.CheckpointError, match="checkpoint_digests.json is missing"):
    trainer.train_and_evaluate(config, str(workdir), print_fn=lambda s: None)
  with pytest.raises(checkpoint.CheckpointError, match="checkpoint_digests.json is missing"):
    runs.restore_run(str(workdir))
  assert not (workdir / "checkpoint_digests.json").exists()
  assert sorted(_checkpoint_steps(workdir)) == [4, 8]  # Nothing set aside or deleted.


def _signalled_while_sampling(args, signum):
  """(exit status, stderr lines) of `python ARGS` sent `signum` once it is drawing samples (its
  progress, on stderr, says so). The child gets Ctrl-C's default handler back (a background
  job's shell would ignore SIGINT)."""
  proc = subprocess.Popen([sys.executable, *args], cwd=ROOT, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True,
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
  lines = []
  for line in proc.stderr:
    lines.append(line)
    if line.startswith("sampling"):
      proc.send_signal(signum)
      break
  lines += proc.stderr.readlines()
  return proc.wait(), lines


@pytest.mark.slow
def test_ctrl_c_during_an_evaluation_is_one_line_and_keeps_the_earlier_results(finished_run,
                                                                              tmp_path):
  workdir = tmp_path / "run"
  shutil.copytree(finished_run, workdir)
  before = (workdir / "eval.json").read_text()
  status, lines = _signalled_while_sampling(
      ["-m", "experiments.evaluate", f"--workdir={workdir}", "--num_samples=200000",
       "--iwae_samples=0", "--nocalibration"], signal.SIGINT)
  assert status == 130, "".join(lines)[-2000:]
  assert not any("Traceback" in line for line in lines), "".join(lines)[-2000:]
  assert lines[-1].startswith("stopped: interrupted (Ctrl-C) before finishing")
  assert (workdir / "eval.json").read_text() == before
  assert not glob.glob(str(workdir / "*.tmp*"))


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_during_generate_is_one_line_and_leaves_the_old_file(finished_run, tmp_path,
                                                                       signum):
  out = tmp_path / "samples.npz"
  out.write_bytes(b"an earlier file")
  status, lines = _signalled_while_sampling(
      ["-m", "mnistgen_jax.cli.generate", f"--workdir={finished_run}", "--num=2000000",
       f"--npy={out}", f"--out={tmp_path / 'grid.png'}"], signum)
  assert status == 128 + signum, "".join(lines)[-2000:]
  assert not any("Traceback" in line for line in lines), "".join(lines)[-2000:]
  what = "SIGTERM received" if signum == signal.SIGTERM else "interrupted (Ctrl-C)"
  assert lines[-1] == f"stopped: {what} before finishing; nothing partial was kept\n"
  assert out.read_bytes() == b"an earlier file"
  assert sorted(os.listdir(tmp_path)) == ["samples.npz"]  # No temporary file, no grid.


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_while_export_writes_is_one_line_and_leaves_no_file(finished_run, tmp_path,
                                                                     signum):
  out = tmp_path / "sampler.jaxexport"
  # The signal comes while the file is half written, the worst moment.
  script = (
      "import os, sys\n"
      "from mnistgen_jax import files\n"
      "write_atomically = files.write_atomically\n"
      "def signalled(path, write):\n"
      "  def half_then_signal(tmp):\n"
      "    with open(tmp, 'wb') as f:\n"
      "      f.write(b'half')\n"
      f"    os.kill(os.getpid(), {int(signum)})\n"
      "    write(tmp)\n"
      "  write_atomically(path, half_then_signal)\n"
      "files.write_atomically = signalled\n"
      f"sys.argv = ['export', '--workdir={finished_run}', '--out={out}', '--platforms=cpu']\n"
      "from mnistgen_jax.cli import export\n"
      "export.run()\n")
  proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True,
                        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
  assert proc.returncode == 128 + signum, proc.stderr[-2000:]
  assert "Traceback" not in proc.stderr
  assert proc.stderr.strip().splitlines()[-1].startswith("stopped: ")
  assert os.listdir(tmp_path) == []


@pytest.mark.slow
def test_an_unreadable_compilation_cache_entry_is_replaced_with_one_line(tmp_path):
  script = (
      "from mnistgen_jax import cli\n"
      "import jax, jax.numpy as jnp\n"
      f"cli.use_compilation_cache({str(tmp_path)!r})\n"
      "print(float(jax.jit(lambda x: jnp.sin(x) @ x.T)(jnp.ones((64, 64))).sum()))\n")
  env = {**os.environ, "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}
  run = lambda: subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                               text=True, env=env)
  first = run()
  entries = sorted(glob.glob(str(tmp_path / "*-cache")))
  assert first.returncode == 0 and entries, first.stderr[-2000:]
  for entry in entries:  # Damaged on disk, as by a kill mid-write or a bad sector.
    with open(entry, "wb") as f:
      f.write(b"not a compiled computation")
  second = run()
  assert second.returncode == 0 and second.stdout == first.stdout, second.stderr[-2000:]
  assert second.stderr.strip().splitlines() == [
      f"warning: unreadable entries of the compilation cache {tmp_path} are deleted as they are "
      "met; their computations are compiled again and stored"]
  assert sorted(glob.glob(str(tmp_path / "*-cache"))) == entries  # Stored afresh.
  third = run()
  assert third.returncode == 0 and third.stderr == "", third.stderr[-2000:]


@pytest.mark.slow
def test_a_second_ctrl_c_inside_a_save_leaves_no_unfinished_folder(tmp_path):
  # The first Ctrl-C asks for a stop after the chunk; a second one lands inside orbax's save,
  # here at the moment its temporary folder would be renamed into place.
  workdir = tmp_path / "run"
  script = (
      "import sys\n"
      "from orbax.checkpoint._src.path import atomicity\n"
      "finalize = atomicity.AtomicRenameTemporaryPath.finalize\n"
      "async def interrupted(self, *args, **kwargs):\n"
      "  raise KeyboardInterrupt\n"
      "atomicity.AtomicRenameTemporaryPath.finalize = interrupted\n"
      f"sys.argv = ['train'] + {_train_cmd(workdir)[3:]!r}\n"
      "from experiments import train\n"
      "train.run()\n")
  proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True)
  assert proc.returncode == 130, proc.stderr[-2000:]
  assert "Traceback" not in proc.stderr
  assert proc.stderr.strip().splitlines()[-1] == (
      "stopped: interrupted (Ctrl-C) before finishing; nothing partial was kept")
  assert os.listdir(workdir / "checkpoints") == []
  # What a SIGKILL mid-save leaves is cleared by the next training run, which then finishes.
  (workdir / "checkpoints" / "7.orbax-checkpoint-tmp-1").mkdir()
  subprocess.run(_train_cmd(workdir), cwd=ROOT, check=True, capture_output=True)
  assert sorted(os.listdir(workdir / "checkpoints")) == ["188", "192"]


def _mount_small_disk(path, size: str) -> bool:
  """A tmpfs of `size` at path (a real full disk for orbax and tensorstore); False where this
  machine does not allow mounting (not root, or in a container without the right)."""
  path.mkdir()
  if os.geteuid() != 0 or shutil.which("mount") is None:
    return False
  return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                        capture_output=True).returncode == 0


@pytest.mark.slow
def test_a_really_full_disk_is_one_line_then_the_run_resumes_once_there_is_room(tmp_path):
  disk = tmp_path / "small"
  if not _mount_small_disk(disk, "3300k"):  # About two checkpoints of this run, then full.
    pytest.skip("needs a small filesystem: mount (as root) is not allowed here")
  try:
    workdir = disk / "run"
    proc = subprocess.run(_train_cmd(workdir), cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr[-3000:]
    progress = ("step ", "epoch ", "vae: ", "config: ")
    said = [line for line in proc.stderr.splitlines() if not line.startswith(progress)]
    assert len(said) == 1, "\n".join(said)[-3000:]
    assert said[0].startswith(f"error: No space left on device: {workdir}"), said[0]
    assert said[0].endswith("; free some space, then run the same command again: it resumes "
                            "from its last checkpoint")
    assert not glob.glob(str(workdir / "checkpoints" / "*orbax-checkpoint-tmp*"))
    saved = runs.latest_checkpoint_step(str(workdir))
    subprocess.run(["mount", "-o", "remount,size=20m", str(disk)], check=True)
    resumed = subprocess.run(_train_cmd(workdir), cwd=ROOT, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resumed from {workdir / 'checkpoints'} at step {saved}" in resumed.stderr + \
        resumed.stdout
    assert runs.latest_checkpoint_step(str(workdir)) == 192
  finally:
    subprocess.run(["umount", str(disk)], capture_output=True)
