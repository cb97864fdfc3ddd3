"""The course as it is committed: every notebook executed in full mode, its outputs stored, and a check that
they are current.

A reader sees the course on GitHub, nbviewer or the built site without running anything, so the committed
notebooks carry the outputs of a full run (what a student gets from `make lab`). `make course` executes them
in place:

    python -m minirl.coursebook notebooks/*.ipynb      # in order; stops naming the notebook and cell that fail

Executing a notebook records in its metadata the mode and a hash of each code cell's source. `check` lists
what makes a committed notebook stale or unreadable: a cell edited since it ran, an unexecuted cell, an error,
smoke-mode outputs, an absolute path, a widget a static view cannot show, a progress bar stored frame by frame.
"""

import argparse
import hashlib
import os
import sys
import time
from pathlib import Path

import nbformat

KEY = "minirl"                 # the notebook metadata this module writes
WIDGET = "application/vnd.jupyter.widget-view+json"
# Run before the first cell, not stored: progress bars as text (a stored widget bar shows as "0%" in a
# static view), one line each once `collapse_progress` keeps their last frame.
PREAMBLE = """\
import tqdm.auto, tqdm.autonotebook, tqdm.std
tqdm.auto.tqdm = tqdm.autonotebook.tqdm = tqdm.std.tqdm
tqdm.auto.trange = tqdm.autonotebook.trange = tqdm.std.trange
"""


class CourseError(RuntimeError):
    """A notebook failed to execute: names the notebook, the cell and the error."""


def cell_hashes(nb):
    """sha256 of each code cell's source, in order."""
    return [hashlib.sha256(cell.source.encode()).hexdigest() for cell in nb.cells if cell.cell_type == "code"]


def collapse_progress(text):
    """Keep what a terminal would show: each line's text after its last carriage return."""
    lines = text.split("\n")
    return "\n".join(line.rstrip("\r").rsplit("\r", 1)[-1] for line in lines)


def clean_outputs(nb):
    """Outputs a static view shows: progress bars as their last frame, consecutive streams merged, no widgets."""
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        kept = []
        for out in cell.outputs:
            if out.output_type in ("display_data", "execute_result") and WIDGET in out.get("data", {}):
                continue                                     # its static figure is drawn before it
            if out.output_type == "stream":
                if kept and kept[-1].output_type == "stream" and kept[-1].name == out.name:
                    kept[-1].text += out.text
                    continue
            kept.append(out)
        for out in kept:
            if out.output_type == "stream":
                out.text = collapse_progress(out.text)
        cell.outputs = kept


def execute(path, smoke=False, out=None, timeout=3600):
    """Execute the notebook at `path` top to bottom in a fresh kernel, from its own folder, in full mode (or
    smoke mode), and write it with its outputs to `out` (default: in place). Returns the seconds it took."""
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    nb.cells.insert(0, nbformat.v4.new_code_cell(PREAMBLE))
    failed = {}
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", record_timing=False,
                            resources={"metadata": {"path": str(path.parent.resolve())}},
                            on_cell_error=lambda cell, cell_index, execute_reply: failed.update(index=cell_index))
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "MINIRL_SMOKE")}
    if smoke:
        env["MINIRL_SMOKE"] = "1"
    saved, os.environ = os.environ, env                      # the kernel inherits this environment
    start = time.perf_counter()
    try:
        client.execute()
    except CellExecutionError as e:
        index = failed.get("index", 0)                         # in nb.cells, the preamble first
        number = sum(cell.cell_type == "code" for cell in nb.cells[1:index + 1])
        first_line = nb.cells[index].source.strip().split("\n")[0][:80]
        raise CourseError(f"{path.name}: code cell {number} failed ({first_line!r}): {e.ename}: {e.evalue}") from None
    finally:
        os.environ = saved
    seconds = time.perf_counter() - start
    nb.cells.pop(0)
    count = 0
    for cell in nb.cells:                                    # numbered from 1 without the preamble
        if cell.cell_type == "code":
            count += 1
            cell.execution_count = count
            for output in cell.outputs:
                if output.output_type == "execute_result":
                    output.execution_count = count
    clean_outputs(nb)
    nb.metadata[KEY] = {"mode": "smoke" if smoke else "full", "seconds": round(seconds),
                        "code_cells_sha256": cell_hashes(nb)}
    out = Path(out or path)
    out.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, out)
    return seconds


def _texts(cell):
    for out in cell.outputs:
        if out.output_type == "stream":
            yield out.text
        elif out.output_type == "error":
            yield "\n".join(out.get("traceback", []))
        else:
            yield from (v for k, v in out.get("data", {}).items() if k.startswith("text/"))


def check(path, mode="full", absolute=None):
    """What is wrong with a notebook's stored outputs: a list of sentences, empty when they are current and from
    a run in `mode`. absolute: path prefixes no output may print (default: the repository, home, /tmp/)."""
    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    absolute = absolute or [str(Path(__file__).parents[1]), str(Path.home()) + "/", "/tmp/"]
    record = nb.metadata.get(KEY)
    if record is None:
        return [f"{path.name} was never executed by minirl.coursebook (no '{KEY}' metadata); run make course"]
    problems = []
    if record.get("mode") != mode:
        problems.append(f"{path.name} holds the outputs of a {record.get('mode')!r} run, not a {mode} one")
    recorded, current = record.get("code_cells_sha256", []), cell_hashes(nb)
    if len(recorded) != len(current):
        problems.append(f"{path.name} has {len(current)} code cells; {len(recorded)} were executed")
    code_cells = [cell for cell in nb.cells if cell.cell_type == "code"]
    for i, (cell, old, new) in enumerate(zip(code_cells, recorded, current)):
        where = f"{path.name} code cell {i + 1} ({cell.source.strip().split(chr(10))[0][:60]!r})"
        if old != new:
            problems.append(f"{where} was edited after it was executed")
    for i, cell in enumerate(code_cells):
        where = f"{path.name} code cell {i + 1}"
        if cell.source.strip() and cell.execution_count is None:
            problems.append(f"{where} was not executed")
        for out in cell.outputs:
            if out.output_type == "error":
                problems.append(f"{where} stores an error: {out.ename}: {out.evalue}")
            if WIDGET in out.get("data", {}):
                problems.append(f"{where} stores a widget, which a static view cannot show")
            if out.output_type == "stream" and "\r" in out.text:
                problems.append(f"{where} stores a progress bar frame by frame")
        for text in _texts(cell):
            for prefix in absolute:
                if prefix in text:
                    problems.append(f"{where} prints an absolute path ({prefix}...)")
    return problems


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m minirl.coursebook", description=__doc__.split("\n")[0])
    parser.add_argument("notebooks", nargs="+", help="notebooks to execute in place, in this order")
    parser.add_argument("--smoke", action="store_true", help="smoke mode (MINIRL_SMOKE=1); requires --out")
    parser.add_argument("--out", default=None, help="a folder to write the executed notebooks to (default: in place)")
    args = parser.parse_args(argv)
    if args.smoke and args.out is None:
        parser.error("--smoke outputs are not the course's: give --out FOLDER")
    total = 0.0
    for name in args.notebooks:
        target = Path(args.out) / Path(name).name if args.out else None
        print(f"{Path(name).name} ...", end=" ", flush=True)
        try:
            seconds = execute(name, smoke=args.smoke, out=target)
        except CourseError as e:
            print("failed")
            sys.exit(f"error: {e}")
        total += seconds
        print(f"{seconds / 60:.1f} min", flush=True)
        problems = check(target or name, mode="smoke" if args.smoke else "full")
        if problems:
            sys.exit("error: " + "; ".join(problems))
    print(f"all {len(args.notebooks)} executed in {total / 60:.1f} min")


if __name__ == "__main__":
    main()
