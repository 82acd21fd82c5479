"""A family is one model module plus one config file: a throwaway family, defined in a temporary
module outside the package, registers itself and trains through the shared loop, with no other
file edited."""
import json
import sys

import numpy as np

from conftest import quiet, tiny_config
from mnistgen_jax import configs, models, runs, trainer
from mnistgen_jax.models import registry

FAMILY_MODULE = '''
"""`throwaway`: a one-hidden-layer Bernoulli decoder of the image from itself (a test family)."""
import flax.linen as nn

from mnistgen_jax import configs, models
from mnistgen_jax.configs import base
from mnistgen_jax.models.nets import bernoulli_nll


class Throwaway(nn.Module):
  hidden: int
  conditional = False
  latent_interpolation = "lerp"

  @nn.compact
  def losses(self, x, y, train=False):
    h = nn.relu(nn.Dense(self.hidden)(x.reshape(x.shape[0], -1)))
    return {"loss": bernoulli_nll(nn.Dense(x[0].size)(h).reshape(x.shape), x)}


def get_config(preset=""):
  config = base.get_config("throwaway")
  config.model.hidden = 16  # width of the one hidden layer
  return configs.with_preset(config, preset)


models.register(models.Family("throwaway",
                              lambda config, stage1=None: Throwaway(config.model.hidden),
                              description="a throwaway test family"))
configs.register("throwaway", __name__)
'''


def test_a_family_from_a_temporary_module_trains_without_editing_any_file(tmp_path, monkeypatch):
  (tmp_path / "throwaway_family.py").write_text(FAMILY_MODULE)
  monkeypatch.syspath_prepend(str(tmp_path))
  # The registries as they are now come back after the test.
  monkeypatch.setattr(registry, "_FAMILIES", dict(registry._FAMILIES))
  monkeypatch.setattr(configs, "_EXTERNAL", dict(configs._EXTERNAL))
  monkeypatch.delitem(sys.modules, "throwaway_family", raising=False)
  __import__("throwaway_family")
  assert "throwaway" in models.names() and "throwaway" in configs.names()
  assert configs.field_help("throwaway")["hidden"] == "width of the one hidden layer"

  config = tiny_config("throwaway", hidden=8, num_epochs=2, learning_rate=1e-2)
  workdir = tmp_path / "run"
  result = trainer.train_and_evaluate(config, str(workdir), print_fn=quiet)
  records = [json.loads(line) for line in (workdir / "metrics.jsonl").open()]
  losses = [r["loss"] for r in records if r["split"] == "train"]
  assert len(losses) == 8 and np.all(np.isfinite(losses)) and losses[-1] < losses[0]
  assert np.isfinite(result["test"]["loss"]) and (workdir / "curves.png").exists()
  # Its run reads back like any other: config.json, the checkpoint, the same parameters' shapes.
  saved, _, model, state = runs.restore_run(str(workdir))
  assert saved.family == "throwaway" and saved.model.hidden == 8 and int(state.step) == 8
  assert state.params["Dense_0"]["kernel"].shape == (784, 8)
