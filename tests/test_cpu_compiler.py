"""XLA:CPU compiler options per family (cpu_compiler): passed only where they were measured (CPU,
the measured jaxlib, a family with ynn_fusions off), and they change speed, not the numbers."""
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import init_state, tiny_config
from mnistgen_jax import configs, cpu_compiler, models, report
from mnistgen_jax import train as train_lib
from mnistgen_jax.metrics import features

OFF = {"xla_cpu_experimental_ynn_fusion_type": ""}
MEASURED = cpu_compiler.jaxlib_version().startswith(cpu_compiler.MEASURED_JAXLIB)
where_the_option_is_passed = pytest.mark.skipif(
    jax.default_backend() != "cpu" or not MEASURED,
    reason="the option is passed on CPU with the measured jaxlib only")


def has_ynn_fusions(compiled_hlo: str) -> bool:
  """Whether compiled HLO text holds a YNNPACK fusion instruction (its metadata, which quotes this
  file's function names, must not count)."""
  return re.search(r"%?ynn_fusion(\.\d+)? = ", compiled_hlo) is not None


def test_options_only_for_ynn_off_on_cpu_with_the_measured_jaxlib():
  assert cpu_compiler.compiler_options(False, "cpu", "0.10.2") == OFF
  assert cpu_compiler.compiler_options(True, "cpu", "0.10.2") is None
  for backend in ("gpu", "tpu"):
    assert cpu_compiler.compiler_options(False, backend, "0.10.2") is None
  # The option is experimental: another jaxlib might not know it (XLA rejects unknown options).
  for jaxlib in ("0.9.2", "0.11.0", "1.10.0", ""):
    assert cpu_compiler.compiler_options(False, "cpu", jaxlib) is None


def test_families_choose_fusions_by_config_and_a_resumed_run_may_change_them():
  assert configs.get_config("conv_vae").run.ynn_fusions is False
  assert configs.get_config("cond_vae").run.ynn_fusions is False  # Inherited from conv_vae.
  assert configs.get_config("pixel_vae").run.ynn_fusions is False
  assert configs.get_config("dcgan").run.ynn_fusions is True
  expected = OFF if jax.default_backend() == "cpu" and MEASURED else None
  assert cpu_compiler.of_config(configs.get_config("conv_vae")) == expected
  # Speed only: a resumed run may change it.
  assert "ynn_fusions" in configs.resumable_fields(configs.get_config("conv_vae"))


@where_the_option_is_passed
def test_the_option_reaches_the_compiled_sampler():
  config = tiny_config("conv_vae")
  model = models.get("conv_vae").build(config)
  tx = train_lib.make_optimizer(config, 10)
  variables = init_state(model, tx).variables()
  args = (variables, jnp.zeros((8,), jnp.int32), jax.random.PRNGKey(2))
  # XLA's default on this jaxlib used YNN fusions on the AVX-512 hosts we measured (it may not on
  # every CPU, so that is not asserted); with the option, never.
  sampler = report.make_sampler(model, cpu_compiler.compiler_options(False))
  assert not has_ynn_fusions(sampler.lower(*args).compile().as_text())
  np.testing.assert_allclose(sampler(*args), report.make_sampler(model)(*args), atol=1e-5)


@where_the_option_is_passed
@pytest.mark.slow
def test_train_steps_agree_with_and_without_ynn_fusions(mnist_slice):
  config = tiny_config("conv_vae")
  model = models.get("conv_vae").build(config)
  tx = train_lib.make_optimizer(config, 10)
  images, labels = (jnp.asarray(a[:128]) for a in mnist_slice)
  batches = jnp.arange(128).reshape(2, 64)
  out = []
  for options in (None, OFF):
    state = init_state(model, tx)
    run = train_lib.make_chunk_runner(model, tx, loop="steps", compiler_options=options)
    state, metrics = run(state, images, labels, batches, 0, 2)
    out.append((state.params, metrics))
  (params_a, metrics_a), (params_b, metrics_b) = out
  np.testing.assert_allclose(metrics_a["loss"], metrics_b["loss"], rtol=1e-5)
  # Adam moves each weight by up to lr = 1e-3 a step whatever the gradient's size, so rounding in
  # a near-zero gradient can show as ~1e-5 in the weights; a wrong kernel would move them ~1e-3.
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-4), params_a, params_b)


@where_the_option_is_passed
def test_classifier_features_compile_without_ynn_fusions(mnist_slice):
  """Every fid_lenet's features: XLA's own kernels (2.6x faster), the same up to rounding."""
  model, variables = features.load_classifier("mnist")
  extract = features.make_extractor(model)
  images = mnist_slice[0][:150]  # One full chunk of 100 and a padded one.
  assert not has_ynn_fusions(extract.extract.lower(variables, images[:100]).compile().as_text())
  got, probs = extract(variables, images, progress=False)
  default = jax.jit(lambda v, x: model.apply(v, x.astype(jnp.float32) / 255.0,
                                             method="features_and_probs"))
  want, want_probs = default(variables, images)
  assert got.shape == (150, 128) and probs.shape == (150, 10)
  np.testing.assert_allclose(got, want, atol=1e-4)
  np.testing.assert_allclose(probs, want_probs, atol=1e-5)
