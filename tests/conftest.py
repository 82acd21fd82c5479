import os
import sys

import jax
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # The checkout.
sys.path.insert(0, ROOT)

from mnistgen_jax import configs, data  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def private_cache_dir(tmp_path_factory):
  """The tests (and the commands they start) keep their cache (calibration rows) in a temporary
  directory, never in the user's ~/.cache."""
  cache = tmp_path_factory.mktemp("cache")
  os.environ["MNISTGEN_JAX_CACHE"] = str(cache)
  # The runs trained in this process keep their compiled computations there too, as the binaries
  # do: a run resumed or trained again with the same shapes reads them back (the same programs,
  # so the same numbers) instead of compiling them again. pytest-xdist's workers share one such
  # directory (JAX locks it), so a program compiles once per pytest run.
  if os.environ.get("PYTEST_XDIST_WORKER"):
    shared = tmp_path_factory.getbasetemp().parent / "xla"
    shared.mkdir(exist_ok=True)
    os.symlink(shared, cache / "xla")
  from mnistgen_jax import cli
  cli.use_compilation_cache(None)


def keep_every_compilation() -> dict:
  """The environment (as private_cache_dir left it) for a command that should keep every
  computation in its compilation cache, however fast it compiles (the default keeps those that
  took 0.1 s or more)."""
  return {**os.environ, "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}


@pytest.fixture(scope="session")
def mnist_slice():
  """The first 256 real MNIST training images and labels (uint8, int32)."""
  return data.load("mnist", "train", limit=256)


# Small networks and few ODE steps, for whichever of these fields a family's config has (the
# pixel flows' U-Net unpatched and with attention: every part of it runs).
TINY_WIDTHS = dict(hidden=(64,), channels=(8, 16), latent_dim=4, prior_width=32, prior_layers=1,
                   guide_width=16,
                   sample_steps=2, patch=1, attention=True, generator_channels=(16, 8),
                   gan_hidden=16, pixel_channels=8, pixel_layers=1, pixel_kernel=3)


def tiny_config(model: str, **overrides):
  """A config that trains in seconds: 256 real images, 4 steps per epoch, small networks."""
  fields = configs.fields(configs.get_config(model))
  settings = dict(train_size=256, test_size=200, batch_size=64, num_epochs=2, log_every=3,
                  eval_batch_size=100, num_samples=16)
  settings.update({k: v for k, v in TINY_WIDTHS.items() if k in fields})
  settings.update(overrides)
  return configs.get_config(model, **settings)


# Initialisations run once: compiled without LLVM's optimisations, 2 s instead of 11 for the tiny
# U-Net's (eager initialisation, a compilation per operation, takes 25 s).
RUN_ONCE = dict(compiler_options={"xla_backend_optimization_level": 0})


def compile_once(fn, **jit_options):
  """jax.jit for a computation a test runs once or a few times, compiled without LLVM's
  optimisations (RUN_ONCE): the tests' tiny shapes spend far longer compiling than running."""
  return jax.jit(fn, **RUN_ONCE, **jit_options)


def init_variables(model, x, y, seed: int = 0, method: str = "losses"):
  """model.init as one computation compiled for a single run (RUN_ONCE), params from
  PRNGKey(seed), 'sample' from PRNGKey(seed + 1). Its rounding may differ from the trainer's
  eager init, so it is for tests that need some parameters, not the trainer's bits."""
  rngs = {"params": jax.random.PRNGKey(seed), "sample": jax.random.PRNGKey(seed + 1)}
  return jax.jit(lambda x, y: model.init(rngs, x, y, method=method), **RUN_ONCE)(x, y)


def initial_state(family, model, config, total_steps: int, stage1=None):
  """train_setup.initial_state with the initialisation compiled (see init_variables)."""
  from mnistgen_jax import train_setup
  made = {}

  def init():
    made["tx"], state = train_setup.initial_state(family, model, config, total_steps, stage1)
    return state
  state = jax.jit(init, **RUN_ONCE)()
  return made["tx"], state


def init_state(model, tx, seed: int = 0, image_shape=(28, 28, 1)):
  """train.init_state with the initialisation compiled (see init_variables)."""
  from mnistgen_jax import train as train_lib
  return jax.jit(lambda: train_lib.init_state(model, tx, seed, image_shape), **RUN_ONCE)()


def quiet(*args) -> None:
  """A print_fn that prints nothing."""
  del args


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
  """tiny_run(name, **overrides) -> the workdir of a finished tiny_config(name, num_epochs=1,
  **overrides) run, trained on first use and shared by every test of the run (stage-1 runs
  of the priors, runs to evaluate or sample from)."""
  from mnistgen_jax import trainer
  trained = {}

  def get(name, **overrides):
    key = (name, tuple(sorted(overrides.items())))
    if key not in trained:
      workdir = str(tmp_path_factory.mktemp(f"tiny_{name}"))
      trainer.train_and_evaluate(tiny_config(name, **{"num_epochs": 1, **overrides}), workdir,
                                 print_fn=quiet)
      trained[key] = workdir
    return trained[key]
  return get


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items):
  """Groups for `pytest -n 2 --dist loadgroup`: a test file is one group (its module fixtures run
  once, in one worker), except where its tests name a group of their own (tests/test_families.py:
  one per family, so the families' long runs spread over the workers)."""
  for item in items:
    if not item.get_closest_marker("xdist_group"):
      item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::")[0]))
