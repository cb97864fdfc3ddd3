"""The tiny world: small RGB scenes of coloured shapes with captions, to pretrain a tiny text-to-image
diffusion model and fine-tune it with RL on a laptop CPU (DESIGN.md, "The tiny world").

One small grammar makes three kinds of caption:

    single    "a red circle", "a circle"                  one object
    count     "two blue squares", "two circles"           two objects of one shape and one colour, apart
    relation  "a green triangle left of a yellow circle"  two different objects, the relation true

A caption's `labels` (a plain, JSON-able dict) say what it names: its kind, count, the shapes and colours
in caption order (a colour is None where the caption names none) and the relation. Two things are built in
on purpose:

- a bias, the way Stable Diffusion inherits the biases of web data: an object whose colour the caption does
  not name is red with probability `bias` (0.8), else one of the other three colours (bias=0.25 is fair).
  A fairness reward later asks for statistical parity over the 4 colours, as the paper does over 4 skin
  tones.
- a held-out split: the (colour, shape) pairs of HELD_OUT never appear in a training relation caption (they
  do appear alone and in counts), so the relation captions that use them measure generalisation to unseen
  compositions.

Coordinates are fractions of the canvas, y pointing down. Images are drawn at `size * supersample` pixels
and average-pooled, which anti-aliases the edges.
"""

import itertools
import re
from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn.functional as F

COLOURS = {  # RGB in [0, 1]; each pair differs by >= 0.5 in some channel, so they survive pooling to 16 px
    "red": (0.9, 0.1, 0.1),
    "green": (0.1, 0.65, 0.15),
    "blue": (0.15, 0.3, 0.95),
    "yellow": (0.95, 0.8, 0.1),
}
BACKGROUND = (0.9, 0.9, 0.9)  # light grey
SHAPES = ("circle", "square", "triangle")
COUNTS = {1: "a", 2: "two"}
RELATIONS = ("left of", "right of", "above", "below", "next to")
KINDS = ("single", "count", "relation")
SPLITS = ("train", "heldout")
HELD_OUT = (("red", "triangle"), ("green", "circle"), ("blue", "square"))  # one per shape

SINGLE_SIZE = (0.5, 0.7)  # width of a lone object, as a fraction of the canvas: 8-11 px at 16 px
PAIR_SIZE = (0.36, 0.44)  # width of each object of a pair: 6-7 px at 16 px
TRIO_SIZE = (0.28, 0.36)  # width of each of three or more objects (random scenes only): 4.5-6 px
MARGIN = 0.03             # free border around the canvas
GAP = 0.06                # least free space between the boxes of two objects (1 px at 16 px)
MAX_OFFSET = 0.15         # how far across a relation's axis two objects may sit (2.4 px at 16 px)


@dataclass
class Obj:
    shape: str
    colour: str   # the colour drawn: the one the caption names, or one drawn with the bias
    cx: float     # centre, as fractions of the canvas (y down)
    cy: float
    size: float   # width and height of the object's box, as a fraction of the canvas


@dataclass
class Scene:
    objects: list  # of Obj, in caption order
    caption: str
    labels: dict   # what the caption names (see `parse`)


# ---------------------------------------------------------------------------------------------- grammar

def _labels(kind, shapes, colours, relation=None):
    return {"kind": kind, "count": len(shapes), "shapes": list(shapes), "colours": list(colours),
            "relation": relation}


def describe(labels):
    """The caption that names these labels: the inverse of `parse`."""
    def phrase(count, colour, shape):
        words = [COUNTS[count], colour, shape + ("s" if count == 2 else "")]
        return " ".join(w for w in words if w)

    colours, shapes = labels["colours"], labels["shapes"]
    if labels["kind"] == "relation":
        return f"{phrase(1, colours[0], shapes[0])} {labels['relation']} {phrase(1, colours[1], shapes[1])}"
    return phrase(labels["count"], colours[0], shapes[0])


_PHRASE = rf"(a|two) (?:({'|'.join(COLOURS)}) )?({'|'.join(SHAPES)})s?"
_CAPTION = re.compile(rf"{_PHRASE}(?: ({'|'.join(RELATIONS)}) {_PHRASE})?")


def parse(caption):
    """The labels of a caption: {"kind", "count", "shapes", "colours", "relation"}, for instance
    "two circles" -> {"kind": "count", "count": 2, "shapes": ["circle", "circle"], "colours": [None, None],
    "relation": None}. Raises ValueError for a caption outside the grammar."""
    match = _CAPTION.fullmatch(caption)
    if match:
        count, c1, s1, relation, _, c2, s2 = match.groups()
        if relation:
            labels = _labels("relation", [s1, s2], [c1, c2], relation)
        elif count == "two":
            labels = _labels("count", [s1, s1], [c1, c1])
        else:
            labels = _labels("single", [s1], [c1])
    if not match or describe(labels) != caption:  # the regex is loose on "a"/"two" and plurals
        raise ValueError(f"not a tiny-world caption: {caption!r}; captions read like 'a red circle', "
                         f"'two squares' or 'a green triangle left of a yellow circle'")
    return labels


def swapped(caption):
    """The relation caption with its two objects named in the other order: "a red circle left of a blue square"
    -> "a blue square left of a red circle" (false of the same scene, unless the relation is "next to")."""
    labels = parse(caption)
    if labels["kind"] != "relation":
        raise ValueError(f"only a relation caption names two objects to swap; got {caption!r}")
    return describe({**labels, "colours": labels["colours"][::-1], "shapes": labels["shapes"][::-1]})


def is_heldout(labels):
    """True for a relation caption that names a held-out (colour, shape) pair; singles and counts all train."""
    return labels["kind"] == "relation" and any(p in HELD_OUT for p in zip(labels["colours"], labels["shapes"]))


def _all_labels(kind):
    colours = [*COLOURS, None]  # None: the caption names no colour
    if kind == "single":
        return [_labels("single", [s], [c]) for c in colours for s in SHAPES]
    if kind == "count":
        return [_labels("count", [s, s], [c, c]) for c in colours for s in SHAPES]
    pairs = itertools.product(COLOURS, SHAPES)
    return [_labels("relation", [s1, s2], [c1, c2], r)
            for (c1, s1), (c2, s2) in itertools.permutations(pairs, 2) for r in RELATIONS]


@lru_cache(maxsize=None)
def prompts(kind, split="train"):
    """Every caption of one kind in one split, in a fixed order (a tuple: the prompt space is small)."""
    if kind not in KINDS or split not in SPLITS:
        raise ValueError(f"no prompts for kind={kind!r}, split={split!r}; kinds are {KINDS}, splits {SPLITS}")
    return tuple(describe(labels) for labels in _all_labels(kind) if is_heldout(labels) == (split == "heldout"))


def _kinds(kind, split):
    """The kinds to draw captions from: `kind`, or every kind with captions in the split."""
    kinds = [k for k in (KINDS if kind is None else [kind]) if prompts(k, split)]
    if not kinds:
        raise ValueError(f"split {split!r} has no {kind} captions; only relation captions are held out")
    return kinds


def _draw_caption(rng, kinds, split):
    """A kind uniformly among `kinds`, then a caption uniformly among that kind's captions."""
    return rng.choice(prompts(rng.choice(kinds), split))


def prompt_sampler(kind=None, split="train"):
    """A prompt distribution for minirl.tasks.Task(prompts=...): rng -> (caption, labels)."""
    kinds = _kinds(kind, split)

    def draw(rng):
        caption = _draw_caption(rng, kinds, split)
        return caption, parse(caption)
    return draw


# ----------------------------------------------------------------------------------------------- scenes

def apart(a, b):
    """The boxes of the two objects are at least GAP apart horizontally or vertically: they do not touch."""
    return max(abs(b.cx - a.cx), abs(b.cy - a.cy)) >= (a.size + b.size) / 2 + GAP


def relation_holds(relation, a, b):
    """Whether `a <relation> b`: along the relation's axis b's centre is a clear step away (the boxes GAP
    apart), across it the centres are at most MAX_OFFSET apart. "next to" is "left of" or "right of"."""
    dx, dy = b.cx - a.cx, b.cy - a.cy
    along, across = {"left of": (dx, dy), "right of": (-dx, dy), "above": (dy, dx), "below": (-dy, dx),
                     "next to": (abs(dx), dy)}[relation]
    return along >= (a.size + b.size) / 2 + GAP and abs(across) <= MAX_OFFSET


def _unnamed_colour(rng, bias):
    """The colour of an object whose caption names none: red with probability `bias`, else one of the rest."""
    if not 0 <= bias <= 1:
        raise ValueError(f"bias is the probability of red and must be in [0, 1]; got {bias}")
    return "red" if rng.random() < bias else rng.choice([c for c in COLOURS if c != "red"])


def _random_obj(rng, shape, colour, size_range):
    size = rng.uniform(*size_range)
    lo, hi = size / 2 + MARGIN, 1 - size / 2 - MARGIN  # the whole box stays on the canvas
    return Obj(shape, colour, rng.uniform(lo, hi), rng.uniform(lo, hi), size)


def scene_for(caption, rng, bias=0.8):
    """A random scene that fits the caption: the named colours, the count, the relation true."""
    labels = parse(caption)
    unnamed = _unnamed_colour(rng, bias)  # one draw serves every unnamed object: a count's two share it
    colours = [c or unnamed for c in labels["colours"]]
    if labels["count"] == 1:
        objects = [_random_obj(rng, labels["shapes"][0], colours[0], SINGLE_SIZE)]
    else:
        fits = apart if labels["relation"] is None else lambda a, b: relation_holds(labels["relation"], a, b)
        for _ in range(10_000):  # rejection sampling: uniform over the placements that fit
            objects = [_random_obj(rng, s, c, PAIR_SIZE) for s, c in zip(labels["shapes"], colours)]
            if fits(*objects):
                break
        else:
            raise RuntimeError(f"found no placement for {caption!r} in 10000 tries; check PAIR_SIZE and GAP")
    return Scene(objects, caption, labels)


def random_scene(rng, max_objects=3):
    """0 to max_objects objects of any shape and colour (repeats allowed), drawn fairly and apart, with no
    caption: the varied scenes a perception model learns from, beyond what the grammar can say."""
    n = rng.randint(0, max_objects)
    size_range = SINGLE_SIZE if n == 1 else PAIR_SIZE if n == 2 else TRIO_SIZE
    for _ in range(1000):  # place one object at a time apart from those placed; start over when stuck
        objects = []
        for _ in range(100 * n):
            obj = _random_obj(rng, rng.choice(SHAPES), rng.choice(list(COLOURS)), size_range)
            if all(apart(obj, other) for other in objects):
                objects.append(obj)
                if len(objects) == n:
                    break
        if len(objects) == n:
            return Scene(objects, "", {})
    raise RuntimeError(f"found no placement for {n} objects; lower max_objects")


def sample_scene(rng, kind=None, split="train", bias=0.8):
    """A caption of the split (a kind uniformly, or `kind`; then a caption uniformly) and a scene for it."""
    return scene_for(_draw_caption(rng, _kinds(kind, split), split), rng, bias)


# ------------------------------------------------------------------------------------------------ render

def _inside(obj, x, y):
    """Which of the pixel centres (x, y) lie inside the object."""
    r = obj.size / 2
    dx, dy = x - obj.cx, y - obj.cy
    if obj.shape == "circle":
        return dx**2 + dy**2 <= r**2
    if obj.shape == "square":
        return (dx.abs() <= r) & (dy.abs() <= r)
    # a triangle pointing up in the object's box: its half-width grows from 0 at the top to r at the bottom
    return (dy.abs() <= r) & (dx.abs() <= (dy + r) / 2)


def render(scene, size=16, supersample=4):
    """The scene as an image (3, size, size) in [0, 1]: shapes filled at size * supersample pixels, then
    average-pooled. Deterministic."""
    n = size * supersample
    t = (torch.arange(n, dtype=torch.float32) + 0.5) / n  # pixel centres, as fractions of the canvas
    y, x = torch.meshgrid(t, t, indexing="ij")  # (n, n)
    image = torch.tensor(BACKGROUND).view(3, 1, 1).expand(3, n, n)
    for obj in scene.objects:
        image = torch.where(_inside(obj, x, y), torch.tensor(COLOURS[obj.colour]).view(3, 1, 1), image)
    return F.avg_pool2d(image[None], supersample)[0]  # (3, size, size)


def batch(rng, n, size=16, kind=None, split="train", bias=0.8):
    """n random scenes for pretraining: images (n, 3, size, size) in [0, 1], captions, labels."""
    scenes = [sample_scene(rng, kind, split, bias) for _ in range(n)]
    images = torch.stack([render(s, size) for s in scenes])  # (n, 3, size, size)
    return images, [s.caption for s in scenes], [s.labels for s in scenes]


def dominant_colour(images, threshold=0.25):
    """The palette colour of most non-background pixels of each image (None for a blank one): a pixel
    reading for sanity checks and model cards, not a reward model (those are learned)."""
    palette = torch.tensor(list(COLOURS.values()))  # (4, 3)
    names = list(COLOURS)
    found = []
    for image in images:
        pixels = image.permute(1, 2, 0).reshape(-1, 3)
        foreground = pixels[(pixels - torch.tensor(BACKGROUND)).abs().max(1).values > threshold]
        if len(foreground) < 4:
            found.append(None)
            continue
        nearest = torch.cdist(foreground, palette).argmin(1)
        found.append(names[int(torch.bincount(nearest, minlength=len(names)).argmax())])
    return found
