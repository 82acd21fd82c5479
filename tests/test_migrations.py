"""Every config.json layout the project has written loads today (configs/migrations.py).

tests/data/old_config_layouts.json holds, per family, the default config.json of each layout it
had, oldest first (one entry per distinct set of fields): the first version's shared flat
config, renamed fields, fields added since. Loading keeps every saved value a field still has."""
import json
import os

import pytest

from mnistgen_jax import configs
from mnistgen_jax.configs import migrations

with open(os.path.join(os.path.dirname(__file__), "data", "old_config_layouts.json")) as f:
  LAYOUTS = json.load(f)


def test_every_family_has_its_older_layouts():
  assert set(LAYOUTS) <= set(configs.names())
  assert sum(len(v) for v in LAYOUTS.values()) > 100
  # The first version: one config shared by every family, the VQ-VAE prior's fields included.
  assert any({"num_codes", "prior_width", "vqvae_workdir"} <= set(s) for s in LAYOUTS["vae"])


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_older_layouts_load_with_their_saved_values(name):
  for saved in LAYOUTS[name]:
    config = configs.from_saved(saved)
    assert config.model == name
    loaded = json.loads(config.to_json())
    kept = migrations.migrate({k: v for k, v in saved.items() if k != "model"},
                              configs.get_config(name), {})
    for field, value in kept.items():
      if field in loaded:
        assert loaded[field] == value, (name, field)
    renamed = {new for old, new in migrations.RENAMED.items() if old in saved}
    assert renamed & set(configs.get_config(name)) <= set(loaded)


def test_fields_absent_in_older_runs_take_the_values_those_runs_had():
  oldest = next(s for s in LAYOUTS["dcgan"] if "generator_channels" not in s)
  config = configs.from_saved(oldest)
  # G mirrored D's widths at half, and there was no R1 or EMA statistics of its own.
  assert list(config.generator_channels) == [c // 2 for c in reversed(oldest["channels"])]
  assert config.gan_r1_gamma == 0.0 and config.gan_ema_batch_stats is False
  before_guide = next(s for s in LAYOUTS["latent_flow"] if "guide_width" not in s)
  assert configs.from_saved(before_guide).guide_width == 0
  before_patch = next(s for s in LAYOUTS["flow"] if "patch" not in s)
  assert configs.from_saved(before_patch).patch == 1  # Pixels, not today's 2x2 folding.
  before_warmup = next(s for s in LAYOUTS["pixel_vae"] if "kl_warmup_steps" not in s)
  assert configs.from_saved(before_warmup).kl_warmup_steps == 0
  # The flat config's stage-1 field of a family without a stage 1 is dropped, not renamed.
  flat_vae = next(s for s in LAYOUTS["vae"] if "vqvae_workdir" in s)
  assert "stage1_workdir" not in configs.from_saved(flat_vae)
  flat_prior = next(s for s in LAYOUTS["vqvae_prior"] if "vqvae_workdir" in s)
  assert configs.from_saved({**flat_prior, "vqvae_workdir": "runs/vq"}).stage1_workdir == "runs/vq"
