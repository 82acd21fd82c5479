"""The Colab quick-start notebook runs top to bottom (tiny config), so it cannot rot."""
import os

import nbformat
import pytest
from nbclient import NotebookClient
from conftest import ROOT


@pytest.mark.slow
def test_quickstart_notebook_executes(tmp_path, monkeypatch):
  monkeypatch.setenv("MNISTGEN_NOTEBOOK_QUICK", "1")
  monkeypatch.setenv("MNISTGEN_NOTEBOOK_WORKDIR", str(tmp_path / "run"))
  monkeypatch.setenv("MNISTGEN_SOURCE", "")  # The test's Python has the project installed.
  notebook = nbformat.read(os.path.join(ROOT, "notebooks", "quickstart.ipynb"), as_version=4)
  NotebookClient(notebook, timeout=None, kernel_name="python3",
                 resources={"metadata": {"path": str(tmp_path)}}).execute()
  outputs = [o for cell in notebook.cells if cell.cell_type == "code"
             for o in cell.get("outputs", [])]
  text = "".join(o.get("text", "") for o in outputs)
  markdown = "".join(o.get("data", {}).get("text/markdown", "") for o in outputs)
  assert not any(o.get("output_type") == "error" for o in outputs)
  assert "SOURCE is empty" in text and "samples: (64, 28, 28) uint8 step 8" in text
  assert "(16, 28, 28, 1)" in text  # the exported sampler's images
  assert "| this run (8 steps) |" in markdown and "IWAE k=2 (nats)" in markdown
  assert "Published results (README)" in markdown  # the records' table, from the checkout
  images = [o for o in outputs if "image/png" in o.get("data", {})]
  assert len(images) == 3  # the sampled grid, the reconstructions, the latent plot
  assert (tmp_path / "run" / "eval.json").exists()
