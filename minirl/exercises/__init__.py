"""Checkers for the course's coding exercises: one module a notebook, each with `check_<exercise>(fn)`.

A checker runs the student's function and the reference on fixed cases, prints pass or fail with the first
failing case, what that case tests and how the answers differ, and returns True or False (for tests and
teachers). It never raises, so a stub cell left undone does not break the notebook (a stub raises
NotImplementedError, reported as "not attempted yet"). A notebook's checker cell ends with `;`
(`check_x(my_x);`) so that the returned value is not echoed as `Out: False` under the printed verdict.

Reference answers for teachers are in `minirl.exercises.solutions`.
"""

import torch


def check(name, student, reference, cases, atol=1e-5, rtol=1e-4, descriptions=None):
    """Compare student(*case) with reference(*case) for each case (a tuple of arguments); print and return
    whether all match. The student works on copies of the case's tensors. Outputs may be tensors, numbers,
    None, or tuples / lists of them. descriptions: optional, one short line a case saying what it tests
    ("last step with set_alpha_to_one=True"), printed with a failure."""
    for i, case in enumerate(cases):
        label = f"case {i}" + (f" ({descriptions[i]})" if descriptions else "")
        try:
            got = student(*[a.clone() if isinstance(a, torch.Tensor) else a for a in case])  # edits stay local
        except NotImplementedError:
            print(f"[ ] {name}: not attempted yet (the stub raises NotImplementedError)")
            return False
        except Exception as e:  # a student's bug is reported, not raised
            print(f"[FAIL] {name}: {label} raised {type(e).__name__}: {e}")
            return False
        want = reference(*case)
        problem = _difference(got, want, atol, rtol)
        if problem:
            print(f"[FAIL] {name}: {label}: {problem}")
            return False
    print(f"[PASS] {name}: {len(cases)} cases match the reference")
    return True


def _difference(got, want, atol, rtol):
    """None if got matches want, else what differs."""
    if want is None or got is None:
        return None if got is want else f"got {got!r}, expected {want!r}"
    if isinstance(want, (tuple, list)):
        if not isinstance(got, (tuple, list)) or len(got) != len(want):
            return f"expected a sequence of {len(want)} values, got {type(got).__name__}"
        for k, (g, w) in enumerate(zip(got, want)):
            problem = _difference(g, w, atol, rtol)
            if problem:
                return f"item {k}: {problem}"
        return None
    got_t, want_t = torch.as_tensor(got, dtype=torch.float64), torch.as_tensor(want, dtype=torch.float64)
    if got_t.shape != want_t.shape:
        return f"shape {tuple(got_t.shape)}, expected {tuple(want_t.shape)}"
    if not torch.isfinite(got_t).all():
        return "not finite (NaN or inf)"
    wrong = ~torch.isclose(got_t, want_t, atol=atol, rtol=rtol)
    if not wrong.any():
        return None
    err = (got_t - want_t).abs().max().item()
    if got_t.ndim == 0:
        return f"got {got_t.item():.6g}, expected {want_t.item():.6g} (differ by {err:.3g})"
    first = ", ".join(f"[{', '.join(map(str, index.tolist()))}] got {got_t[tuple(index)].item():.6g}, "
                      f"expected {want_t[tuple(index)].item():.6g}" for index in wrong.nonzero()[:3])
    return f"{int(wrong.sum())} of {wrong.numel()} values differ, by up to {err:.3g}; the first: {first}"
