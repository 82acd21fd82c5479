"""Two-stage training in one command: a prior's --stage1=FAMILY trains that stage 1 into
<workdir>/stage1 first (the train binary calls this before training the prior)."""
from mnistgen_jax import configs, evaluation, models, runs, trainer


def train_stage1(config, workdir: str, evaluate: bool = True, eval_samples: int = 10000,
                 reconstruction_images: int = 0, print_fn=print) -> None:
  """--stage1=FAMILY: stage 1 trained (or resumed) in <workdir>/stage1 and evaluated (without
  the IWAE bound: mnistgen-evaluate adds it), for the prior to train on next. Skipped once the
  prior's workdir stores its stage 1 (runs.load_stage1): the prior then needs nothing else."""
  family = models.get(config.family)
  if config.model.stage1 not in family.stage1_families:
    raise ValueError(f"--stage1={config.model.stage1}: --model={config.family} builds on "
                     f"{', '.join(family.stage1_families)}")
  if runs.is_self_contained(workdir):
    return
  stage1_dir = runs.stage1_workdir(config, workdir)
  stage1_config = configs.stage1_config(config)
  # Finished for the epochs asked now: a stage 1 trained for fewer is resumed to them.
  if not runs.is_finished_run(stage1_dir, stage1_config.run.num_epochs):
    print_fn(f"stage 1: {config.model.stage1} in {stage1_dir}")
    trainer.train_and_evaluate(stage1_config, stage1_dir, print_fn=print_fn)
  if evaluate and not runs.is_evaluated(stage1_dir):
    evaluation.evaluate_trained_run(stage1_dir, eval_samples, 0, reconstruction_images,
                                    progress=print_fn is print, print_fn=print_fn)
  print_fn(f"stage 2: {config.family} in {workdir}")
