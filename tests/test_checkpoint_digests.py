"""Checkpoints are used only as verified by their digests (checkpoint_digests.json), unless the
user says --trust_unverified_checkpoint; a save cut off before its digest is set aside on resume."""
import json

import jax.numpy as jnp
import numpy as np
import pytest

from mnistgen_jax import checkpoint

STATE = {"w": jnp.arange(6.0)}


def _saved(tmp_path, steps=(1, 2)):
  ckpt = checkpoint.Checkpointer(str(tmp_path), keep=3)
  for step in steps:
    ckpt.save(step, {"w": STATE["w"] * step}, metrics={"loss": float(10 - step)})
  ckpt.close()
  return tmp_path / "checkpoint_digests.json"


def _restore(tmp_path, step=None, trust=False):
  ckpt = checkpoint.Checkpointer(str(tmp_path), keep=3, trust_unverified=trust)
  try:
    return np.asarray(ckpt.restore(STATE, step)["w"])
  finally:
    ckpt.close()


def _one_line_refusal(tmp_path, match, step=None):
  with pytest.raises(checkpoint.CheckpointError, match=match) as e:
    _restore(tmp_path, step)
  assert "\n" not in str(e.value) and "--trust_unverified_checkpoint" in str(e.value)


def test_a_missing_digests_file_is_refused_unless_trusted_and_never_recreated(tmp_path):
  digests = _saved(tmp_path)
  digests.unlink()
  _one_line_refusal(tmp_path, "checkpoint_digests.json is missing, so the checkpoints")
  assert not digests.exists()  # Refusing wrote nothing: no digests over unverified weights.
  np.testing.assert_array_equal(_restore(tmp_path, trust=True), np.arange(6.0) * 2)
  assert not digests.exists()
  # Trusted and trained on: the new step gets its digest, the unverified ones none.
  ckpt = checkpoint.Checkpointer(str(tmp_path), keep=3, trust_unverified=True)
  ckpt.save(3, {"w": STATE["w"] * 3}, metrics={"loss": 7.0})
  ckpt.close()
  assert sorted(json.loads(digests.read_text())) == ["3"]
  np.testing.assert_array_equal(_restore(tmp_path), np.arange(6.0) * 3)
  _one_line_refusal(tmp_path, r"checkpoints/1 has no digest", step=1)


@pytest.mark.parametrize("text", ["[]", "{not json", '{"1": 5}', '"x"'])
def test_a_malformed_digests_file_is_refused_in_one_line(tmp_path, text):
  digests = _saved(tmp_path)
  digests.write_text(text)
  _one_line_refusal(tmp_path, "is not a digests file")
  assert digests.read_text() == text
  np.testing.assert_array_equal(_restore(tmp_path, trust=True), np.arange(6.0) * 2)


def test_a_step_without_its_digest_is_refused_naming_the_step(tmp_path):
  digests = _saved(tmp_path)
  saved = json.loads(digests.read_text())
  del saved["2"]
  digests.write_text(json.dumps(saved))
  _one_line_refusal(tmp_path, r"checkpoints/2 has no digest .* delete that step's folder")
  np.testing.assert_array_equal(_restore(tmp_path, 1), np.arange(6.0))


def test_a_save_cut_off_before_its_digest_is_set_aside_and_the_one_before_resumes(tmp_path):
  digests = _saved(tmp_path)
  saved = json.loads(digests.read_text())
  saved["2"] = checkpoint.PENDING  # As a kill between orbax's save and the digest leaves it.
  digests.write_text(json.dumps(saved))
  _one_line_refusal(tmp_path, r"checkpoints/2 has no digest")
  ckpt = checkpoint.Checkpointer(str(tmp_path), keep=3)
  assert ckpt.drop_cut_off_save() == 2 and ckpt.latest_step() == 1
  assert ckpt.drop_cut_off_save() is None  # Step 1 is verified: nothing more to set aside.
  np.testing.assert_array_equal(np.asarray(ckpt.restore(STATE)["w"]), np.arange(6.0))
  ckpt.save(2, {"w": STATE["w"] * 2}, metrics={"loss": 8.0})  # Trained again, saved whole.
  ckpt.close()
  assert isinstance(json.loads(digests.read_text())["2"], dict)
  np.testing.assert_array_equal(_restore(tmp_path), np.arange(6.0) * 2)


def test_every_save_is_marked_pending_before_it_starts(tmp_path, monkeypatch):
  _saved(tmp_path, steps=(1,))
  ckpt = checkpoint.Checkpointer(str(tmp_path), keep=3)
  seen = []
  real_save = ckpt.manager.save

  def save(step, *args, **kwargs):  # What the digests file holds while orbax writes.
    seen.append(json.loads((tmp_path / "checkpoint_digests.json").read_text()))
    return real_save(step, *args, **kwargs)

  monkeypatch.setattr(ckpt.manager, "save", save)
  ckpt.save(2, {"w": STATE["w"] * 2}, metrics={"loss": 8.0})
  ckpt.close()
  assert seen[0]["2"] == checkpoint.PENDING and isinstance(seen[0]["1"], dict)


def test_a_step_that_is_not_kept_is_named_with_the_steps_that_are(tmp_path):
  _saved(tmp_path, steps=(1, 2, 3, 4))  # keep=3: step 1 deleted when 4 was saved
  with pytest.raises(checkpoint.CheckpointError,
                     match=r"holds no checkpoint of step 1 \(kept: 2, 3, 4; older ones"):
    _restore(tmp_path, 1)
