"""Notebook 07 executed in smoke mode shows every figure it draws.

A library call that switches matplotlib's backend (`matplotlib.use("Agg")`) silently stops inline figures for
the rest of the kernel: the notebook still runs and nbval stays green, but its figures never appear. This
test runs a copy of notebook 07 (about 100 s on 2 CPU cores; the other notebooks run under nbval only) with a
counter of the pyplot figures it creates, and compares the count with the PNG images among its outputs.
"""

import shutil
from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).parents[1] / "notebooks"

COUNT_FIGURES = """\
import matplotlib.pyplot as _plt
_figures_drawn = 0
_figure = _plt.figure
def _counting_figure(*args, **kwargs):
    global _figures_drawn
    _figures_drawn += 1
    return _figure(*args, **kwargs)
_plt.figure = _counting_figure  # plt.subplots creates its figure through plt.figure too
"""


def test_notebook_07_shows_every_figure(tmp_path, monkeypatch):
    monkeypatch.setenv("CI", "true")                   # smoke mode, as under nbval
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    path = tmp_path / "07_joint_training.ipynb"
    shutil.copy(NOTEBOOKS / "07_joint_training.ipynb", path)
    nb = nbformat.read(path, as_version=4)
    nb.cells.insert(0, nbformat.v4.new_code_cell(COUNT_FIGURES))
    nb.cells.append(nbformat.v4.new_code_cell("print('figures drawn:', _figures_drawn)"))
    NotebookClient(nb, timeout=1200, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()  # runs/ as the course writes it

    images = sum("image/png" in out.get("data", {}) for cell in nb.cells if cell.cell_type == "code"
                 for out in cell.outputs if out.output_type in ("display_data", "execute_result"))
    drawn = int(nb.cells[-1].outputs[0]["text"].split()[-1])
    assert drawn >= 4, f"notebook 07 drew only {drawn} figures; expected its curves, grids and bar chart"
    assert images == drawn, f"notebook 07 drew {drawn} figures but shows {images}: some vanished"
