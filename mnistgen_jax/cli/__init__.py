"""The binaries (one module each in this package, console scripts `mnistgen-*`) and their shared
plumbing: run_binary (every expected error as one line on stderr, exit status 2; Ctrl-C and
SIGTERM as a clean stop), the config flag, the sampling flags, output paths, the compilation cache.

`--config=mnistgen_jax/configs/vae.py[:preset] --config.model.latent_dim=2` is the ml_collections
way (google/flax examples). Short forms, rewritten to it before absl parses the command line:
  --model=NAME [--preset=P]   ->  --config=<configs/NAME.py>[:P]   (default model: vae)
  --FIELD=VALUE               ->  --config.SECTION.FIELD=VALUE, for a field of that family's
  --config.FIELD=VALUE            config (configs/base.py names the sections)
  --vqvae_workdir=DIR         ->  --config.model.stage1_workdir=DIR  (the field's old name)
so every field is declared once, in its config file, and never typed again as a flag.
"""
from __future__ import annotations

import difflib
import errno
import glob
import os
import signal
import sys
import threading
import warnings

from absl import flags
from ml_collections import config_flags

from mnistgen_jax import configs, errors, files

EXIT_ERROR = 2      # an expected failure (bad input, a run that cannot be used as asked)
ALIASES = {"vqvae_workdir": "stage1_workdir"}


def _option(arg: str):
  """('name', 'value' or None) of '--name=value' / '--name'; None for anything else."""
  if not arg.startswith("--") or arg == "--":
    return None
  name, eq, value = arg[2:].partition("=")
  return name, (value if eq else None)


def expand_config_args(argv: list[str], flag_values=flags.FLAGS) -> list[str]:
  """argv with the short forms above rewritten to --config / --config.FIELD."""
  args, model, preset, config_path = [argv[0]], None, None, None
  rest = list(argv[1:])
  while rest:
    arg = rest.pop(0)
    option = _option(arg)
    if option and option[0] in ("model", "preset", "config"):
      name, value = option
      if value is None:
        if not rest:
          raise ValueError(f"--{name} needs a value")
        value = rest.pop(0)
      if name == "model":
        model = value
      elif name == "preset":
        preset = value
      else:
        config_path = value
      continue
    args.append(arg)
  if model is not None and config_path is not None:
    raise ValueError("pass --model=NAME or --config=FILE, not both")
  if config_path is None:
    model = model or "vae"
    if model not in configs.names():
      raise ValueError(f"unknown model {model!r}; choose one of: {', '.join(configs.names())}")
    config_path = configs.path(model)
    fields = configs.fields(configs.get_config(model))
  else:  # A config file given by path: its fields are set as --config.FIELD, no short forms.
    fields = {}
    by_path = {os.path.abspath(configs.path(name)): name for name in configs.names()}
    model = by_path.get(os.path.abspath(config_path.split(":")[0]))
  config = configs.get_config(model) if model else None
  section = {name: configs.section_of(config, name) for name in configs.fields(config)} \
      if config else {}
  if preset:
    config_path = f"{config_path.split(':')[0]}:{preset}"
  out = [args[0], f"--config={config_path}"]
  for arg in args[1:]:
    option = _option(arg)
    if option and option[0].startswith("config.") and option[1] is not None:
      name = option[0][len("config."):]
      name = ALIASES.get(name, name)
      if name in section:  # --config.FIELD: the long form without the section.
        arg = f"--config.{section[name]}.{name}={option[1]}"
    elif option and option[1] is not None:
      name = ALIASES.get(option[0], option[0])
      if name in fields and name not in flag_values:
        arg = f"--config.{section[name]}.{name}={option[1]}"
    elif option:  # --FIELD / --noFIELD of a boolean field, as absl spells its own booleans.
      name, value = option[0], "True"
      if name not in fields and name.startswith("no"):
        name, value = name[2:], "False"
      if isinstance(fields.get(name), bool) and name not in flag_values:
        arg = f"--config.{section[name]}.{name}={value}"
    out.append(arg)
  # The last --config.FIELD=... wins, as for any flag (config_flags would join repeated tuples).
  last = {}
  for i, arg in enumerate(out):
    if arg.startswith("--config.") and "=" in arg:
      last[arg.partition("=")[0]] = i
  return [arg for i, arg in enumerate(out)
          if not (arg.startswith("--config.") and "=" in arg and last[arg.partition("=")[0]] != i)]


_DEFERRED_ERRORS: list[str] = []


def define_config_flag(help_string: str):
  """--config (config_flags), after the binary's other flags. config_flags registers the
  --config.FIELD overrides it sees in sys.argv when defined, so it sees the expanded argv."""
  try:
    argv = expand_config_args(sys.argv)
  except ValueError as e:
    _DEFERRED_ERRORS.append(str(e))  # Reported by parse_flags, as one line.
    argv = sys.argv[:1]
  return config_flags.DEFINE_config_file("config", None, help_string, sys_argv=argv)


def fail(message: str) -> None:
  """Ends the binary: `error: message` as one line on stderr, exit status EXIT_ERROR."""
  print(f"error: {message}", file=sys.stderr)
  sys.exit(EXIT_ERROR)


def run_binary(main, then: str = "run the same command again", flags_parser=None) -> None:
  """absl's app.run(main) for a console script: an expected error (errors.expected_error_line:
  ValueError, errors.UserError, an OS error however wrapped) is one line on stderr and exit
  status 2; training's Interrupted (SIGTERM/SIGINT, a checkpoint saved) `stopped: ...` and
  128 + the signal; Ctrl-C or SIGTERM anywhere else `stopped` and 130 or 143. Anything else is a
  bug: its traceback shows. then: what to do after freeing disk space."""
  from absl import app

  def guarded(argv):
    _terminate_as_interrupt()
    try:
      return main(argv)
    except errors.Interrupted as e:  # The shell's convention: 128 + the signal's number.
      print(f"stopped: {e}", file=sys.stderr)
      sys.exit(128 + e.signum)
    except KeyboardInterrupt as e:
      signum = e.args[0] if e.args and e.args[0] == signal.SIGTERM else signal.SIGINT
      what = "SIGTERM received" if signum == signal.SIGTERM else "interrupted (Ctrl-C)"
      print(f"stopped: {what} before finishing; nothing partial was kept", file=sys.stderr)
      sys.exit(128 + signum)
    except Exception as e:
      line = errors.expected_error_line(e, then)
      if line is None:
        raise
      fail(line)

  app.run(guarded, flags_parser=flags_parser or parse_plain_flags)


def _terminate_as_interrupt() -> None:
  """SIGTERM (`kill`, a batch system's preemption) unwinds like Ctrl-C, so what is being written
  is cleaned up (files.write_atomically) and the binary says so in one line, instead of dying
  where it stands. Training replaces it with its own handler while it runs (trainer.StopSignals:
  finish the chunk, save, stop)."""
  def raise_interrupt(signum, frame):
    del frame
    raise KeyboardInterrupt(signum)
  if threading.current_thread() is threading.main_thread():
    signal.signal(signal.SIGTERM, raise_interrupt)


HELP_ARGS = ("--help", "--helpshort", "-h", "-?")


def _model_of(argv: list[str]) -> str:
  """The family a command line trains (--model=NAME, else the default, vae)."""
  for i, arg in enumerate(argv):
    option = _option(arg)
    if option and option[0] == "model":
      return option[1] if option[1] is not None else (argv[i + 1] if i + 1 < len(argv) else "")
  return "vae"


def family_help(model: str) -> str:
  """The config fields of a family, each `--FIELD=DEFAULT  meaning` (configs.field_help)."""
  config, meanings = configs.get_config(model), configs.field_help(model)
  def shown(value):
    return ",".join(map(str, value)) if isinstance(value, tuple) else value
  lines = [f"Config fields of --model={model} by section (set as --FIELD=VALUE or "
           f"--config.SECTION.FIELD=VALUE; presets: "
           f"{', '.join(configs.presets(model)) or 'none'}):"]
  for section in configs.SECTIONS:
    if not config[section]:
      continue
    resumes = " (may change on resume)" if section in configs.RESUMABLE_SECTIONS else ""
    lines.append(f" {section}{resumes}:")
    for name in sorted(config[section]):
      meaning = f"  {meanings[name]}" if meanings[name] else ""
      lines.append(f"  --{name}={shown(config[section][name])}{meaning}")
  return "\n".join(lines)


def parse_flags(argv: list[str]) -> list[str]:
  """absl flags_parser of a binary with the config flag: short forms expanded, then parsed; a
  bad flag is one line, exit 2. --help (--helpshort, -h) prints the binary's own flags and the
  config fields of its --model, with defaults and meanings."""
  if any(arg in HELP_ARGS for arg in argv[1:]):
    model = _model_of(argv)
    if model not in configs.names():
      fail(f"unknown model {model!r}; choose one of: {', '.join(configs.names())}")
    # The binary's own flags: those of the module that defines --workdir (the train binary's).
    binary = flags.FLAGS.find_module_defining_flag("workdir")
    print(flags.FLAGS.module_help(binary) if binary else "")
    print(family_help(model))
    sys.exit(0)
  if _DEFERRED_ERRORS:
    fail(_DEFERRED_ERRORS[0])
  expanded = expand_config_args(argv)
  return parse_plain_flags(expanded, _config_fields(expanded))


def _config_fields(argv: list[str]) -> list[str]:
  """The field names of the config a (expanded) command line reads, for suggestions."""
  for arg in argv:
    if arg.startswith("--config=") and arg.split("=", 1)[1].split(":")[0].startswith(
        configs.DIRECTORY):
      model = os.path.splitext(os.path.basename(arg.split("=", 1)[1].split(":")[0]))[0]
      return list(configs.fields(configs.get_config(model)))
  return []


def did_you_mean(name: str, known) -> str:
  """' (did you mean --X?)' for the closest known name, else ''."""
  close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
  return f"; did you mean --{close[0]}?" if close else ""


def parse_plain_flags(argv: list[str], fields=()) -> list[str]:
  """absl flags_parser: a bad flag (or config field) is one line, exit 2, with the closest
  known flag or field where one is close."""
  try:
    return flags.FLAGS(argv)
  except flags.UnrecognizedFlagError as e:
    known = [n for n in flags.FLAGS if not n.startswith("config.")] + list(fields)
    fail(f"unknown flag --{e.flagname}{did_you_mean(e.flagname, known)} (see --help)")
  except (flags.Error, ValueError, AttributeError, KeyError, TypeError) as e:
    message = " ".join(str(e).replace("\\n", " ").replace("\\'", "'").split())
    if message[:1] in "'\"" and message[-1:] == message[:1]:
      message = message[1:-1]  # KeyError/AttributeError quote their message.
    if "Traceback (most recent call last)" in message:  # config_flags wraps the config file's error
      message = message.rsplit("Error: ", 1)[-1]
    if isinstance(e, AttributeError):
      field = message.split("'")[1] if message.count("'") >= 2 else message
      message = f"unknown config field {field!r}{did_you_mean(field, fields)}"
    if isinstance(e, (flags.Error, AttributeError)):
      message += " (see --helpshort)"
    fail(message)


_DEFINE = {float: flags.DEFINE_float, int: flags.DEFINE_integer, str: flags.DEFINE_string}


def sampling_fields() -> dict:
  """How a trained run samples, over every family: {field: (type, families, meaning)} of the
  fields of the families' `sampling` sections, which generate, evaluate and export may change
  without retraining."""
  found = {}
  for model in configs.names():
    section = configs.get_config(model).sampling
    for name, value in section.items():
      kind, families, meaning = found.get(name, (type(value), [], ""))
      found[name] = (kind, families + [model], meaning or configs.field_help(model)[name])
  return found


def define_sampling_flags() -> None:
  """A flag per sampling field (sampling_fields: --temperature, --solver, ...); unset: the run's
  own values."""
  for name, (kind, families, meaning) in sampling_fields().items():
    _DEFINE[kind](name, None, f"{meaning} ({', '.join(families)})")


def with_sampling_flags(config, flag_values=flags.FLAGS):
  """config with the sampling flags that were set; ValueError for one its family lacks."""
  for name, (_, families, _) in sampling_fields().items():
    value = flag_values[name].value
    if value is None:
      continue
    if name not in config.sampling:
      raise ValueError(f"--{name} is for {', '.join(families)} runs, not {config.family!r}")
    config.sampling[name] = value
  return configs.validate(config)


def image_extensions() -> list[str]:
  """The file extensions PIL can write, e.g. '.png'."""
  from PIL import Image
  Image.init()
  return sorted(ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.SAVE)


def check_output(flag: str, path: str, extensions=None, overwrite: bool = True) -> None:
  """Raises ValueError (one line naming the flag and the fix) when `path` cannot be written as
  asked; called before any work, so a bad --out never costs a finished computation."""
  folder = os.path.dirname(os.path.abspath(path))
  if os.path.isdir(path):
    raise ValueError(f"--{flag}={path} is a directory: pass a file path")
  if extensions is not None and os.path.splitext(path)[1].lower() not in extensions:
    shown = ", ".join(e for e in extensions if e in (".png", ".jpg", ".npy", ".jaxexport")) or \
        ", ".join(extensions[:5])
    raise ValueError(f"--{flag}={path} has no extension this writes: end it with {shown}")
  if not os.path.isdir(folder):
    raise ValueError(f"--{flag}={path}: folder {folder} does not exist: create it "
                             f"(mkdir -p {folder}) or pass another --{flag}")
  if os.path.exists(path) and not overwrite:
    raise ValueError(f"--{flag}={path} exists; pass --overwrite to replace it")
  if not os.access(folder, os.W_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
    raise ValueError(f"--{flag}={path} is not writable here: pass another --{flag}")


def write_output(path: str, write) -> None:
  """write(tmp_path) then an atomic rename to `path`: a failure (e.g. a full disk) leaves neither
  a half-written file nor the temporary one, and raises ValueError in one line."""
  try:
    files.write_atomically(path, write)
  except OSError as e:
    hint = ": free some space and run again" if e.errno == errno.ENOSPC else ""
    raise ValueError(f"could not write {path} ({e.strerror or e}){hint}") from e


# JAX's persistent compilation cache. An evaluation of a conv VAE compiles 123 computations in
# ~7 s of its ~60 s on 2 CPU cores; the 15 that take >= 0.1 s each are 4.6 s of it (a cache entry
# per tiny computation would cost its own read, and JAX's size limit rescans the directory on
# every write).
COMPILATION_CACHE_SETTINGS = {
    "jax_persistent_cache_min_compile_time_secs": 0.1,  # JAX's default, 1 s, keeps 1 of the 123
    "jax_compilation_cache_max_size": 1 << 30,  # bytes; least recently used entries go first
}


def define_trust_flag() -> None:
  """--trust_unverified_checkpoint: use checkpoints whose digests are missing or damaged."""
  if "trust_unverified_checkpoint" in flags.FLAGS:
    return  # Defined by another binary's module imported in the same process (the tests).
  flags.DEFINE_bool(
      "trust_unverified_checkpoint", False,
      "use checkpoints that cannot be verified (checkpoint_digests.json missing, damaged, or "
      "without their step), as they are; by default they are refused")


def define_compilation_cache_flag() -> None:
  """--compilation_cache: where compiled computations are kept between runs ('' : nowhere)."""
  flags.DEFINE_string(
      "compilation_cache", None,
      "directory where compiled XLA computations are kept and read back by later runs (JAX's "
      "persistent compilation cache: seconds saved per run, the same numbers); default: "
      "<cache dir>/xla, the cache dir being $MNISTGEN_JAX_CACHE, else ~/.cache/mnistgen_jax; "
      "'' turns it off")


def use_compilation_cache(path: str | None) -> str | None:
  """Turns on JAX's persistent compilation cache in `path` (None: compilation_cache_dir(); '':
  off) and returns the directory, or None where it is off or cannot be created: a cache that
  cannot be written costs the next run its compile time, nothing else. Call before compiling.

  COMPILATION_CACHE_SETTINGS apply unless the environment sets them the JAX way (e.g.
  JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0 keeps every computation). The size limit also
  makes JAX lock the directory, so processes sharing it never read a half-written entry. The key
  covers the computation, the compiler options and XLA_FLAGS, the devices and the versions."""
  import jax
  if path is None:
    path = compilation_cache_dir()
  if not path:
    return None
  try:
    import filelock  # noqa: F401  (JAX locks the directory with it; without it: no cache)
  except ImportError:
    return None
  try:
    os.makedirs(path, exist_ok=True)
  except OSError:
    return None
  if not os.access(path, os.W_OK):
    return None
  jax.config.update("jax_compilation_cache_dir", path)
  for name, value in COMPILATION_CACHE_SETTINGS.items():
    if name.upper() not in os.environ:
      jax.config.update(name, value)
  _drop_unreadable_cache_entries(path)
  return path


def _drop_unreadable_cache_entries(path: str) -> None:
  """A cache entry that cannot be read (cut by a kill, damaged on disk) makes JAX warn and
  recompile, and it never replaces an entry that exists, so the warning came back on every run.
  Here the entry is deleted when its read fails, JAX's write then stores the fresh compile, and the
  warning becomes one line. JAX has no public hook for this: the wrapped function is private, and
  where it is missing nothing changes."""
  from jax._src import compilation_cache  # pylint: disable=g-import-not-at-top
  read = getattr(compilation_cache, "get_executable_and_time", None)
  if read is None or getattr(read, "drops_unreadable", False):
    return

  dropped = []

  def read_or_drop(cache_key, *args, **kwargs):
    try:
      return read(cache_key, *args, **kwargs)
    except Exception:  # what JAX itself turns into a warning and a recompile
      for entry in glob.glob(os.path.join(glob.escape(path), glob.escape(cache_key) + "-*")):
        try:
          os.remove(entry)
        except OSError:
          pass
      if not dropped:
        print(f"warning: unreadable entries of the compilation cache {path} are deleted as they "
              "are met; their computations are compiled again and stored", file=sys.stderr)
      dropped.append(cache_key)
      raise
  read_or_drop.drops_unreadable = True
  compilation_cache.get_executable_and_time = read_or_drop
  warnings.filterwarnings("ignore", message="Error reading persistent compilation cache entry")


def compilation_cache_dir() -> str:
  """<cache dir>/xla: beside the evaluation's reference and calibration caches."""
  return os.path.join(files.cache_dir(), "xla")
