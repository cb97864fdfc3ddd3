"""The course's coding exercises follow one convention: a notebook's stub is `my_<name>`, the cell after it calls
`check_<name>(my_<name>);`, and the teachers' answer, where a topic has one, is `<name>` in
`minirl.exercises.solutions.<topic>`."""

import importlib
import re
from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = sorted((Path(__file__).parents[1] / "notebooks").glob("[0-9]*.ipynb"))


def stubs(path):
    """(stub name, the source of the notebook's code cells) of every exercise stub in the notebook."""
    code = [cell.source for cell in nbformat.read(path, as_version=4).cells if cell.cell_type == "code"]
    names = [name for source in code if "raise NotImplementedError" in source
             for name in re.findall(r"^def (\w+)\(", source, re.M)]
    return names, "\n".join(code)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_each_stub_is_my_name_and_is_checked(path):
    names, code = stubs(path)
    for name in names:
        assert name.startswith("my_"), f"{path.name}: the stub {name!r} is not named my_<name>"
        checker = f"check_{name[3:]}({name});"
        assert checker in code, f"{path.name}: no cell calls {checker}"
        module = re.search(rf"from minirl\.exercises\.(\w+) import [^\n]*check_{name[3:]}", code)
        assert module, f"{path.name}: check_{name[3:]} is not imported from minirl.exercises"
        try:
            solutions = importlib.import_module(f"minirl.exercises.solutions.{module[1]}")
        except ModuleNotFoundError:
            continue                                 # a topic without teachers' answers
        assert hasattr(solutions, name[3:]), f"minirl.exercises.solutions.{module[1]} has no {name[3:]}"
