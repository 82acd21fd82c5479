"""The config flag: --config files with --config.FIELD overrides, and the short forms."""
import errno
import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT, keep_every_compilation, tiny_config
from mnistgen_jax import cli, configs, evaluation, trainer


def test_short_forms_expand_to_the_config_flag():
  expand = lambda *args: cli.expand_config_args(["prog", *args], flag_values={"workdir": None})
  assert expand("--model=conv_vae", "--latent_dim=2", "--workdir=w") == [
      "prog", f"--config={configs.path('conv_vae')}", "--config.model.latent_dim=2", "--workdir=w"]
  assert expand("--model", "vae", "--preset=1m", "--hidden=512,256") == [
      "prog", f"--config={configs.path('vae')}:1m", "--config.model.hidden=512,256"]
  assert expand("--model=vqvae_prior", "--vqvae_workdir=runs/vq") == [  # the old flag name
      "prog", f"--config={configs.path('vqvae_prior')}", "--config.model.stage1_workdir=runs/vq"]
  assert expand("--num_epochs=3")[1] == f"--config={configs.path('vae')}"  # default family
  assert expand("--config=my.py", "--config.model.latent_dim=2", "--latent_dim=3") == [
      "prog", "--config=my.py", "--config.model.latent_dim=2", "--latent_dim=3"]  # no short forms
  assert expand(f"--config={configs.path('vae')}", "--config.latent_dim=2", "--latent_dim=3") == [
      "prog", f"--config={configs.path('vae')}", "--config.model.latent_dim=2", "--latent_dim=3"]
  assert expand("--model=vae", "--config.batch_size=8")[2:] == [  # the section filled in
      "--config.train.batch_size=8"]
  assert expand("--num_codes=3") == ["prog", f"--config={configs.path('vae')}", "--num_codes=3"]
  assert expand("--model=dcgan", "--nogan_ema_batch_stats")[2:] == [  # absl's boolean forms
      "--config.model.gan_ema_batch_stats=False"]
  assert expand("--model=dcgan",
                "--gan_ema_batch_stats")[2:] == ["--config.model.gan_ema_batch_stats=True"]
  assert expand("--model=dcgan", "--nolatent_dim", "--noworkdir")[2:] == [  # booleans only
      "--nolatent_dim", "--noworkdir"]
  assert expand("--model=dcgan", "--channels=8,16", "--latent_dim=3", "--channels=4,8")[2:] == [
      "--config.model.latent_dim=3", "--config.model.channels=4,8"
  ]  # the last wins, not (8, 16, 4, 8)
  with pytest.raises(ValueError, match="not both"):
    expand("--model=vae", "--config=my.py")
  with pytest.raises(ValueError, match="unknown model 'gan'"):
    expand("--model=gan")


def _train(*args, workdir, env=None):
  return subprocess.run(
      [sys.executable, "-m", "experiments.train", f"--workdir={workdir}", "--noevaluate", *args],
      cwd=ROOT, capture_output=True, text=True, env=env)


@pytest.mark.slow
def test_config_file_with_overrides_equals_the_short_form(tmp_path):
  tiny = ["num_epochs=1", "train_size=128", "test_size=100", "batch_size=64", "hidden=(32,)",
          "latent_dim=2", "log_every=2"]
  by_file = _train(f"--config={configs.path('vae')}", *(f"--config.{a}" for a in tiny),
                   f"--compilation_cache={tmp_path / 'xla'}", workdir=tmp_path / "file",
                   env=keep_every_compilation())
  assert by_file.returncode == 0, by_file.stderr[-2000:]
  assert any(f.endswith("-cache") for f in os.listdir(tmp_path / "xla"))  # the train step's
  short = _train("--model=vae", *(f"--{a}" for a in tiny), workdir=tmp_path / "short")
  assert short.returncode == 0, short.stderr[-2000:]
  saved = [json.loads((tmp_path / d / "config.json").read_text()) for d in ("file", "short")]
  assert saved[0] == saved[1]
  assert saved[0]["model"]["latent_dim"] == 2 and saved[0]["model"]["hidden"] == [32]


@pytest.mark.parametrize("args,message", [
    (["--config.latnt_dim=2"],
     "error: unknown config field 'latnt_dim'; did you mean --latent_dim?"),
    (["--latnt_dim=2"], "error: unknown flag --latnt_dim; did you mean --latent_dim?"),
    (["--worrkdir=x"], "error: unknown flag --worrkdir; did you mean --workdir?"),
    (["--model=conv_vae", "stray"], "error: unexpected arguments: stray"),
    (["--latent_dim=abc"], "error: flag --config.model.latent_dim=abc"),
    (["--preset=2m"], "error: --preset=2m is not a preset of 'vae' (its presets: 1m, iwae_1layer)"),
    (["--hidden=400,abc"], "error: --hidden must be 1 to 8 positive integer widths"),
    (["--learning_rate=inf"], "error: --learning_rate must be a finite number, got inf"),
    (["--learning_rate=1e4"], "error: --learning_rate must be in (0, 1], got 10000.0"),
    (["--num_epochs=0"], "error: --num_epochs must be a positive integer, got 0"),
])
def test_bad_config_flags_are_one_line(args, message, tmp_path):
  proc = _train(*args, workdir=tmp_path / "w")
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines()[-1].startswith(message), proc.stderr[-500:]
  assert "Traceback" not in proc.stderr
  assert not (tmp_path / "w").exists()


@pytest.mark.slow
def test_training_again_keeps_an_earlier_evaluation(tmp_path):
  """eval.json has one writer that merges: a later run without evaluation keeps the block."""
  config = tiny_config("vae", num_epochs=1)
  first = trainer.train_and_evaluate(config, str(tmp_path), print_fn=lambda s: None)
  first["evaluation"] = evaluation.evaluate_trained_run(str(tmp_path), 200, 2, progress=False)
  assert first["evaluation"]["step"] == 4 and first["evaluation"]["samples"]["fid_lenet"] > 0
  trainer.train_and_evaluate(config, str(tmp_path), print_fn=lambda s: None)  # --noevaluate
  saved = json.loads((tmp_path / "eval.json").read_text())
  assert saved["evaluation"] == json.loads(json.dumps(first["evaluation"]))
  assert saved["test"] == json.loads(json.dumps(first["test"]))
  # Evaluating the run again gives the same figures (the checkpoint holds its fitted prior).
  again = evaluation.evaluate_run(str(tmp_path), 200, 2, progress=False)
  # Wall times differ; eval.json adds at which step each part was computed (all at this one).
  figures = lambda e: {k: v for k, v in e.items() if k not in ("seconds", "part_steps", "stale")}
  assert set(again["seconds"]) == {"reference", "reconstructions", "samples", "iwae_k2"}
  assert figures(json.loads(json.dumps(again))) == figures(saved["evaluation"])
  assert saved["evaluation"]["part_steps"] == {"reconstructions": 4, "samples": 4,
                                               "iwae_nll_k2": 4}
  assert saved["evaluation"]["stale"] == []


def test_write_output_is_atomic_and_a_full_disk_is_one_line(tmp_path):
  target = tmp_path / "grid.png"
  cli.write_output(str(target), lambda path: open(path, "w").write("new"))
  assert target.read_text() == "new" and sorted(os.listdir(tmp_path)) == ["grid.png"]

  def fills_the_disk(path):
    with open(path, "w") as f:
      f.write("half")
    raise OSError(errno.ENOSPC, "No space left on device")
  with pytest.raises(ValueError, match=f"could not write {target} .No space left on device.: "
                                       "free some space and run again"):
    cli.write_output(str(target), fills_the_disk)
  assert target.read_text() == "new" and sorted(os.listdir(tmp_path)) == ["grid.png"]


# A process that turns the compilation cache on (cli.use_compilation_cache), compiles one
# computation and prints: the directory it got, the persistent-cache events JAX reported, a value.
_COMPILE_ONCE = """
import sys, jax, jax.numpy as jnp, numpy as np
from mnistgen_jax import cli
events = []
jax.monitoring.register_event_listener(lambda name, **kw: events.append(name.rsplit("/", 1)[-1]))
path = cli.use_compilation_cache(None if sys.argv[1] == "default" else sys.argv[1])
value = jax.jit(lambda x: jnp.tanh(x @ x.T).sum())(np.arange(12.0, dtype=np.float32).reshape(3, 4) / 10)
print(path, sorted(e for e in events if e in ("cache_hits", "cache_misses")), float(value),
      jax.config.jax_persistent_cache_min_compile_time_secs)
"""


def _compile_once(path, env=None):
  proc = subprocess.run([sys.executable, "-c", _COMPILE_ONCE, path], cwd=ROOT, capture_output=True,
                        text=True, env=env or keep_every_compilation())
  assert proc.returncode == 0, proc.stderr[-2000:]
  return proc.stdout.split()


@pytest.mark.slow
def test_compilation_cache_is_written_then_read_back(tmp_path):
  cache = tmp_path / "xla"
  first = _compile_once(str(cache))
  assert first[:2] == [str(cache), "['cache_misses']"]
  assert [f for f in os.listdir(cache) if f.endswith("-cache")], os.listdir(cache)
  again = _compile_once(str(cache))
  assert again == [str(cache), "['cache_hits']", first[2], "0.0"]  # read back; the same number
  # The default is beside the evaluation's caches ($MNISTGEN_JAX_CACHE: conftest's temporary one)
  # and keeps what compiles in 0.1 s or more (cli.COMPILATION_CACHE_SETTINGS).
  default = _compile_once("default", env=os.environ)
  assert default[0] == os.path.join(os.environ["MNISTGEN_JAX_CACHE"], "xla")
  assert default[3] == "0.1"


def test_compilation_cache_off_or_unwritable_compiles_as_without(tmp_path):
  off = _compile_once("")
  assert off[0] == "None" and off[1] == "[]"
  blocked = tmp_path / "file"
  blocked.write_text("not a directory")
  unwritable = _compile_once(str(blocked / "xla"))  # cannot be created: no cache, no error
  assert unwritable[0] == "None" and unwritable[1:] == off[1:]
  assert blocked.read_text() == "not a directory"


def test_help_lists_the_family_config_fields_with_defaults_and_meanings():
  proc = subprocess.run([sys.executable, "-m", "experiments.train", "--model=conv_vae", "--help"],
                        cwd=ROOT, capture_output=True, text=True)
  assert proc.returncode == 0, proc.stderr[-2000:]
  lines = proc.stdout.splitlines()
  assert "  --workdir: directory for checkpoints, metrics and pictures" in lines  # its own flags
  assert any(line.startswith("Config fields of --model=conv_vae") for line in lines)
  assert "  --latent_dim=20  latent dimension (2 draws latent.png directly)" in lines
  assert "  --hidden=256  dense widths after the (optional) conv stack" in lines  # conv_vae's
  assert "  --arch=conv  mlp | conv" in lines  # a field of vae.py, with conv_vae's default
  fields = [line.split("=")[0].strip() for line in lines if line.startswith("  --") and "=" in line
            and not line.startswith("  --[no]")]
  assert {f"--{k}" for k in configs.fields(configs.get_config("conv_vae"))} <= set(fields)
  assert {" model:", " train:", " run (may change on resume):"} <= set(lines)  # by section
  assert configs.field_help("dcgan")["gan_hidden"]  # every family's own fields are described
  bad = subprocess.run([sys.executable, "-m", "experiments.train", "--model=gan", "--help"],
                       cwd=ROOT, capture_output=True, text=True)
  assert bad.returncode == 2 and bad.stderr.strip().startswith("error: unknown model 'gan'")


def _run_binary(main, capsys, monkeypatch):
  monkeypatch.setattr(sys, "argv", ["binary"])
  with pytest.raises(SystemExit) as stop:
    cli.run_binary(main)
  return stop.value.code, capsys.readouterr().err.strip().splitlines()


def test_run_binary_ends_expected_errors_in_one_line_and_shows_bugs(capsys, monkeypatch):
  from mnistgen_jax import checkpoint, errors

  def raising(error):
    def main(argv):
      raise error
    return main
  assert _run_binary(raising(ValueError("--x must be > 0")), capsys, monkeypatch) == (
      2, ["error: --x must be > 0"])
  assert _run_binary(raising(checkpoint.CheckpointError("bad step")), capsys, monkeypatch) == (
      2, ["error: bad step"])
  full = OSError(errno.ENOSPC, "No space left on device", "/w/ckpt")
  wrapped = RuntimeError("orbax failed")
  wrapped.__cause__ = full
  assert _run_binary(raising(wrapped), capsys, monkeypatch) == (
      2, ["error: No space left on device: /w/ckpt; free some space, then run the same command "
          "again"])
  assert _run_binary(raising(errors.Interrupted("SIGTERM received", 15)), capsys,
                     monkeypatch) == (128 + 15, ["stopped: SIGTERM received"])
  code, lines = _run_binary(raising(KeyboardInterrupt()), capsys, monkeypatch)
  assert code == 130 and len(lines) == 1 and lines[0].startswith("stopped: interrupted")
  with pytest.raises(ZeroDivisionError):  # A bug: its traceback shows.
    monkeypatch.setattr(sys, "argv", ["binary"])
    cli.run_binary(raising(ZeroDivisionError()))
