"""The committed notebooks carry the current outputs of a full run (minirl.coursebook), and the checker and the
runner behind `make course` do what they say."""

from pathlib import Path

import nbformat
import pytest

from minirl import coursebook

NOTEBOOKS = sorted((Path(__file__).parents[1] / "notebooks").glob("[0-9]*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_notebook_holds_its_current_full_run(path):
    problems = coursebook.check(path)
    assert not problems, "\n".join(problems) + "\nrun `make course` (or python -m minirl.coursebook NOTEBOOK)"


def _executed_notebook(tmp_path):
    """A notebook as `execute` leaves it, without running a kernel."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# A lesson"),
                nbformat.v4.new_code_cell("x = 1", execution_count=1),
                nbformat.v4.new_code_cell("print(x)", execution_count=2,
                                          outputs=[nbformat.v4.new_output("stream", name="stdout", text="1\n")])]
    nb.metadata[coursebook.KEY] = {"mode": "full", "seconds": 1, "code_cells_sha256": coursebook.cell_hashes(nb)}
    return nb


def _problems(tmp_path, nb):
    path = tmp_path / "nb.ipynb"
    nbformat.write(nb, path)
    return coursebook.check(path, absolute=["/abs/repo"])


def test_check_passes_a_current_notebook(tmp_path):
    assert _problems(tmp_path, _executed_notebook(tmp_path)) == []


@pytest.mark.parametrize("spoil, found", [
    (lambda nb: setattr(nb.cells[2], "source", "print(x + 1)"), "code cell 2 ('print(x + 1)') was edited"),
    (lambda nb: nb.cells.append(nbformat.v4.new_code_cell("y = 2")), "3 code cells; 2 were executed"),
    (lambda nb: setattr(nb.cells[1], "execution_count", None), "code cell 1 was not executed"),
    (lambda nb: nb.cells[2].outputs.append(nbformat.v4.new_output("error", ename="AssertionError", evalue="no",
                                                                  traceback=[])), "stores an error: AssertionError"),
    (lambda nb: nb.metadata[coursebook.KEY].update(mode="smoke"), "outputs of a 'smoke' run, not a full one"),
    (lambda nb: nb.metadata.pop(coursebook.KEY), "never executed by minirl.coursebook"),
    (lambda nb: setattr(nb.cells[2].outputs[0], "text", "saved to /abs/repo/runs/x\n"), "absolute path"),
    (lambda nb: setattr(nb.cells[2].outputs[0], "text", " 10%|#\r 20%|##\n"), "progress bar frame by frame"),
    (lambda nb: nb.cells[2].outputs.append(nbformat.v4.new_output(
        "display_data", data={coursebook.WIDGET: {"model_id": "a"}, "text/plain": "IntSlider()"})), "a widget"),
])
def test_check_names_each_kind_of_stale_or_unreadable_output(tmp_path, spoil, found):
    nb = _executed_notebook(tmp_path)
    spoil(nb)
    problems = _problems(tmp_path, nb)
    assert any(found in p for p in problems), problems


def test_collapse_progress_keeps_each_lines_last_frame():
    assert coursebook.collapse_progress("a\r  0%|\r 50%|\r100%|\ndone\n") == "100%|\ndone\n"
    assert coursebook.collapse_progress("100%|\r\n") == "100%|\n"


def test_execute_stores_one_line_progress_and_no_widget_then_names_a_failing_cell(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("from tqdm.auto import tqdm\nfor _ in tqdm(range(3), desc='steps'):\n"
                                          "    pass"),
                nbformat.v4.new_code_cell("import ipywidgets\nipywidgets.IntSlider()"),
                nbformat.v4.new_code_cell("from minirl import course\ncourse.smoke()")]
    path = tmp_path / "lesson.ipynb"
    nbformat.write(nb, path)
    coursebook.execute(path, smoke=True)
    done = nbformat.read(path, as_version=4)
    assert [c.execution_count for c in done.cells] == [1, 2, 3]
    bar = "".join(o.text for o in done.cells[0].outputs)
    assert bar.count("\n") == 1 and bar.startswith("steps: 100%") and "\r" not in bar
    assert done.cells[1].outputs == []                                      # the widget is not stored
    assert done.cells[2].outputs[0].data["text/plain"] == "True"            # smoke mode reached the kernel
    assert done.metadata[coursebook.KEY]["mode"] == "smoke"
    assert coursebook.check(path, mode="smoke", absolute=["/abs/repo"]) == []

    done.cells.insert(1, nbformat.v4.new_code_cell("assert 1 == 2, 'the taught effect did not happen'"))
    nbformat.write(done, path)
    with pytest.raises(coursebook.CourseError, match=r"lesson.ipynb: code cell 2 failed \(.assert 1 == 2.*"
                                                     r"AssertionError: the taught effect did not happen"):
        coursebook.execute(path)
