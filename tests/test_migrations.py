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
    assert config.family == name
    loaded = configs.fields(json.loads(config.to_json()))
    today = configs.fields(configs.get_config(name))
    kept = migrations.migrate({k: v for k, v in saved.items() if k != "model"}, today, {})
    assert set(kept) & set(today) and set(kept) & set(today) <= set(loaded)
    for field, value in kept.items():
      if field in today:
        assert loaded[field] == value, (name, field)
    renamed = {new for old, new in migrations.RENAMED.items() if old in saved}
    assert renamed & set(today) <= set(loaded)


@pytest.mark.parametrize("name", configs.names())
def test_todays_layout_is_sections_and_its_flat_form_loads_the_same(name):
  config = configs.get_config(name, preset=next(iter(configs.presets(name)), ""))
  saved = json.loads(config.to_json())
  assert set(saved) == {"family", "preset", *configs.SECTIONS}
  assert configs.from_saved(saved).to_json() == config.to_json()
  # The same fields written flat, as every older version wrote them, load to the same config.
  flat = {"model": name, "preset": saved["preset"], **configs.fields(saved)}
  assert configs.from_saved(flat).to_json() == config.to_json()
  with pytest.raises(ValueError, match="outside the sections: latent"):
    configs.from_saved({**saved, "latent": 2})


def test_field_names_are_unique_over_the_sections():
  for name in configs.names():
    config = configs.get_config(name)
    names = [field for section in configs.SECTIONS for field in config[section]]
    assert len(names) == len(set(names)), name


def test_fields_absent_in_older_runs_take_the_values_those_runs_had():
  oldest = next(s for s in LAYOUTS["dcgan"] if "generator_channels" not in s)
  config = configs.from_saved(oldest)
  # G mirrored D's widths at half, and there was no R1 or EMA statistics of its own.
  assert list(config.model.generator_channels) == [c // 2 for c in reversed(oldest["channels"])]
  assert config.model.gan_r1_gamma == 0.0 and config.model.gan_ema_batch_stats is False
  before_guide = next(s for s in LAYOUTS["latent_flow"] if "guide_width" not in s)
  assert configs.from_saved(before_guide).model.guide_width == 0
  before_patch = next(s for s in LAYOUTS["flow"] if "patch" not in s)
  assert configs.from_saved(before_patch).model.patch == 1  # Pixels, not today's 2x2 folding.
  before_warmup = next(s for s in LAYOUTS["pixel_vae"] if "kl_warmup_steps" not in s)
  assert configs.from_saved(before_warmup).model.kl_warmup_steps == 0
  # The flat config's stage-1 field of a family without a stage 1 is dropped, not renamed.
  flat_vae = next(s for s in LAYOUTS["vae"] if "vqvae_workdir" in s)
  assert "stage1_workdir" not in configs.fields(configs.from_saved(flat_vae))
  flat_prior = next(s for s in LAYOUTS["vqvae_prior"] if "vqvae_workdir" in s)
  assert configs.from_saved({
      **flat_prior, "vqvae_workdir": "runs/vq"
  }).model.stage1_workdir == "runs/vq"
