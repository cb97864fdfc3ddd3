"""Checkers of notebook 09 (the paper's system): statistical parity from class probabilities (soft shares) and
GenEval's relative-position rule, each compared with minirl.rewards on fixed cases.

- soft statistical parity: paper Eq. 12 with each class's share of the minibatch taken as the mean of the
  classifier's probabilities, mean_x p(a | x), in place of the frequency of its hard labels
  (`minirl.rewards.statistical_parity` on (B, K) probabilities);
- relative position: where box a lies relative to box b, by GenEval's rule (djghosh13/geneval,
  evaluation/evaluate_images.py; `minirl.rewards.composition.relative_position`).
"""

import torch

from minirl.exercises import check
from minirl.rewards import statistical_parity
from minirl.rewards.composition import relative_position

POSITIONS = ("left of", "right of", "above", "below")


def soft_statistical_parity(probs):
    """Reference: SP of a minibatch's class probabilities probs (B, K): sum_a (mean_x p(a | x) - 1/K)^2."""
    return statistical_parity(probs, probs.shape[1])


def _probability_cases():
    g = torch.Generator().manual_seed(9)
    one_hot = torch.eye(4)
    return [
        (torch.full((16, 4), 0.25),),
        (one_hot[torch.zeros(16, dtype=torch.long)],),
        (one_hot[torch.arange(16) % 4],),
        (torch.tensor([[0.7, 0.1, 0.1, 0.1]] * 16),),
        (torch.randn(16, 4, generator=g).softmax(-1),),
        (torch.randn(10, 2, generator=g).mul(3).softmax(-1),),
        (torch.randn(8, 5, generator=g).mul(5).softmax(-1),),
        (torch.tensor([[0.2, 0.5, 0.3]]),),
    ]


# what each of _probability_cases() tests, in order, printed with a failure
PROBABILITY_CASES = ("every image unsure, p = 1/4 for each class: soft SP 0",
                     "every image sure of class 0: soft SP 0.75, as with hard labels",
                     "4 sure images a class: soft SP 0",
                     "every image 0.7 on class 0: the argmax says all class 0, the soft shares do not",
                     "16 random images, 4 classes", "2 classes, 10 images", "5 classes, peaked probabilities",
                     "a single image: its probabilities are the shares")


def check_soft_statistical_parity(student_fn):
    """student_fn(probs (B, K) class probabilities, rows summing to 1) -> soft SP, a number (0-d tensor or float)."""
    return check("soft statistical parity (Eq. 12, soft shares)", student_fn, soft_statistical_parity,
                 _probability_cases(), descriptions=PROBABILITY_CASES)


def _box_cases():
    t = torch.tensor
    return [
        (t([0.05, 0.40, 0.25, 0.60]), t([0.60, 0.40, 0.80, 0.60])),
        (t([0.40, 0.70, 0.60, 0.90]), t([0.40, 0.10, 0.60, 0.30])),
        (t([0.05, 0.05, 0.25, 0.25]), t([0.60, 0.60, 0.80, 0.80])),
        (t([0.30, 0.30, 0.50, 0.50]), t([0.42, 0.40, 0.62, 0.60])),
        (t([0.40, 0.40, 0.60, 0.60]), t([0.43, 0.40, 0.63, 0.60])),
        (t([0.30, 0.00, 0.50, 0.20]), t([0.10, 0.30, 0.90, 0.95])),
        (t([300.0, 200.0, 400.0, 300.0]), t([0.0, 0.0, 100.0, 100.0])),
        (t([0.60, 0.20, 0.90, 0.50]), t([0.10, 0.20, 0.40, 0.50])),
    ]


# what each of _box_cases() tests, in order
BOX_CASES = ("plainly left of", "plainly below (y points down)", "diagonal: left of and above",
             "close centres: after the dead zone, divided by the unshrunk offset's norm, only 'left of' passes 0.5",
             "centres closer than the dead zone: no position", "above a large box",
             "boxes in pixels: right of, not quite below", "plainly right of")


def _describe(positions):
    return "{" + ", ".join(repr(p) for p in sorted(positions)) + "}" if positions else "set()"


def check_relative_position(student_fn):
    """student_fn(box_a (4,), box_b (4,)) -> the set of GenEval's positions of a relative to b, a subset of
    POSITIONS (boxes as corners x0, y0, x1, y1, y pointing down). Prints PASS / FAIL / not attempted yet, returns
    True or False, never raises."""
    name = "relative_position (GenEval)"
    cases = _box_cases()
    for i, (a, b) in enumerate(cases):
        try:
            got = student_fn(a.clone(), b.clone())
        except NotImplementedError:
            print(f"[ ] {name}: not attempted yet (the stub raises NotImplementedError)")
            return False
        except Exception as e:  # a student's bug is reported, not raised
            print(f"[FAIL] {name}: case {i} ({BOX_CASES[i]}) raised {type(e).__name__}: {e}")
            return False
        want = relative_position(a, b)
        if not isinstance(got, (set, frozenset, list, tuple)) or not all(p in POSITIONS for p in got):
            print(f"[FAIL] {name}: case {i} ({BOX_CASES[i]}): expected a set of names from {POSITIONS}, got {got!r}")
            return False
        if set(got) != want:
            print(f"[FAIL] {name}: case {i} ({BOX_CASES[i]}; a={[round(v, 3) for v in a.tolist()]}, "
                  f"b={[round(v, 3) for v in b.tolist()]}): got {_describe(set(got))}, expected {_describe(want)}")
            return False
    print(f"[PASS] {name}: {len(cases)} cases match the reference")
    return True
