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
  notebook = nbformat.read(os.path.join(ROOT, "notebooks", "quickstart.ipynb"), as_version=4)
  NotebookClient(notebook, timeout=None, kernel_name="python3",
                 resources={"metadata": {"path": str(tmp_path)}}).execute()
  outputs = "".join(o.get("text", "") for cell in notebook.cells if cell.cell_type == "code"
                    for o in cell.get("outputs", []))
  assert "Error" not in outputs
  assert "IWAE bound:" in outputs and "(16, 28, 28, 1)" in outputs
  images = [o for cell in notebook.cells for o in cell.get("outputs", [])
            if "image/png" in o.get("data", {})]
  assert len(images) == 3  # samples, reconstructions, curves
  assert (tmp_path / "run" / "eval.json").exists()
