"""In-process A/B of a family's train step with nets.Conv's 'taps' choice off (conv_taps_ratio 0)
and on (2, the default): experiments/step_ab.py with --field=conv_taps_ratio --values=0,2.

  .venv/bin/python experiments/results/conv_taps_2026-11-28/taps_step_ab.py conv_vae 50
"""
import sys

from absl import app

from experiments import step_ab

if __name__ == "__main__":
  family, steps = sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "50"
  app.run(step_ab.main, argv=[sys.argv[0], f"--family={family}", f"--steps={steps}",
                              "--field=conv_taps_ratio", "--values=0,2"])
