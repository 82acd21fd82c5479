"""`python -m experiments.samples_figure`: docs/images/samples.png, the README's picture.

Sample grids of the best runs side by side, each labelled with its family, its hardware and its
fid_lenet as its result record gives them (experiments/results/records/)."""
import os
import sys

if __package__ in (None, ""):  # Run as a file: the checkout's package, not an installed copy.
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from PIL import Image, ImageDraw, ImageFont  # noqa: E402

from mnistgen_jax import docs, files  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "experiments", "results")
# (record, its committed samples grid, the label's first words)
PANELS = (
    ("cond_flow_accelerator", "h100_cond_flow_guidance/grid_guidance_1.25.png", "cond_flow"),
    ("cond_dcgan", "dcgan_infogan/cond_dcgan_samples.png", "cond_dcgan"),
    ("best_cpu_digits", "records/best_cpu_digits/samples.png", "latent_flow on cond_vae"),
    ("dcgan", "dcgan_infogan/dcgan_samples.png", "dcgan"),
)
SIDE, LABEL = 300, 44


def main() -> None:
  records = docs.load_records(ROOT)
  font = ImageFont.load_default(size=15)
  figure = Image.new("L", (SIDE * len(PANELS), SIDE + LABEL), 255)
  draw = ImageDraw.Draw(figure)
  for i, (name, grid, label) in enumerate(PANELS):
    record = records[name]
    image = Image.open(os.path.join(RESULTS, grid)).convert("L").resize((SIDE - 8, SIDE - 8))
    figure.paste(image, (i * SIDE + 4, 4))
    fid = record["figures"]["fid_samples"]
    hardware = record["hardware"].split(" (")[0].replace("one core of a ", "1 core, ")
    draw.text((i * SIDE + 8, SIDE + 2), f"{label}  fid_lenet {fid:.1f}", fill=0, font=font)
    draw.text((i * SIDE + 8, SIDE + 22), hardware, fill=80, font=font)
  out = os.path.join(ROOT, "docs", "images", "samples.png")
  files.write_atomically(out, figure.save)
  print("wrote", os.path.relpath(out, ROOT))


if __name__ == "__main__":
  main()
