"""The tiny world's learned reward models, one per reward family of the paper, and the rewards built on them.

- `Detector` (compositionality, like the paper's UniDet): a small CNN that reads a 16 px image as a scene:
  for each of the 12 (colour, shape) classes, how many such objects there are (0, 1, 2, 3+) and where the
  object is (a heatmap whose soft-argmax is its centre). It is trained on rendered scenes with noise, so it
  also reads the diffusion model's samples. `CompositionReward` is the detector's probability that the
  image shows exactly what the caption names (counts of every class) with the named relation holding.
  `Detector.colour` is the colour classifier h(x) of the parity reward: the colour with the most objects,
  one of the four always (no "no colour" answer that a blank image could buy).
- `PreferenceModel` (human preference, like ImageReward or PickScore): a small CNN scoring an image, trained
  with the Bradley-Terry loss -log sigmoid(r(x_w) - r(x_l)) on pairs of renders of one caption, each pair
  judged by a simulated rater (`rater_utility`: it likes big, centred objects and dislikes objects cut by the
  frame). Renders never touch the frame, so the model never learns that dislike: the gap through which an
  optimiser can hack it, as reward models of the field are hacked.

Both train in a minute or two on 2 CPU cores (`minirl train-judges`); their weights are committed under
assets/tinyworld/judges with their accuracies.
"""

import json
import math
import os
import random
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from minirl.tinyworld import scenes

COLOURS, SHAPES = list(scenes.COLOURS), list(scenes.SHAPES)
CLASSES = [(c, s) for c in COLOURS for s in SHAPES]  # class k = (colour, shape)
MAX_COUNT = 3                                        # counts 0, 1, 2 and "3 or more"
RELATION_MIN = 0.2     # a relation holds when the centres are this far apart along its axis (a fifth of
RELATION_SOFTNESS = 0.04  # the canvas) and further along it than across; the soft version's width


def _trunk(width):
    """16x16 -> (2 width, 8, 8) features; the shared body of both models."""
    def block(cin, cout, stride=1):
        return [nn.Conv2d(cin, cout, 3, stride, 1), nn.GroupNorm(8, cout), nn.SiLU()]
    return nn.Sequential(*block(3, width), *block(width, width), *block(width, 2 * width, 2),
                         *block(2 * width, 2 * width))


class Detector(nn.Module):
    """Image (B, 3, 16, 16) in [0, 1] -> count logits (B, 12, 4) and object centres (B, 12, 2) in [0, 1]."""

    def __init__(self, width=32):
        super().__init__()
        self.trunk = _trunk(width)
        self.heatmaps = nn.Conv2d(2 * width, len(CLASSES), 1)                 # where each class is, 8x8
        self.count_head = nn.Sequential(nn.Conv2d(2 * width, 2 * width, 3, 2, 1), nn.SiLU(), nn.Flatten(),
                                        nn.Linear(2 * width * 16, 128), nn.SiLU(),
                                        nn.Linear(128, len(CLASSES) * (MAX_COUNT + 1)))

    def forward(self, images):
        h = self.trunk(images * 2 - 1)                                       # (B, 2w, 8, 8)
        counts = self.count_head(h).view(len(images), len(CLASSES), MAX_COUNT + 1)
        weights = self.heatmaps(h).flatten(2).softmax(-1)                    # (B, 12, 64)
        grid = (torch.arange(8, dtype=h.dtype, device=h.device) + 0.5) / 8
        y, x = torch.meshgrid(grid, grid, indexing="ij")
        centres = weights @ torch.stack([x.flatten(), y.flatten()], -1)      # (B, 12, 2) soft-argmax
        return counts, centres

    @torch.no_grad()
    def read(self, images):
        """Probabilities of each count (B, 12, 4) and centres (B, 12, 2)."""
        counts, centres = self(images.float())
        return counts.softmax(-1), centres

    def expected_by_colour(self, images):
        """The number of objects of each colour the detector expects in each image, (B, len(COLOURS))."""
        p, _ = self.read(images)
        expected = (p * torch.arange(MAX_COUNT + 1, dtype=p.dtype)).sum(-1)  # (B, 12)
        return expected.view(len(images), len(COLOURS), len(SHAPES)).sum(-1)

    @torch.no_grad()
    def colour(self, images):
        """h(x) of the parity reward: the index into COLOURS of the colour with the most objects expected."""
        return self.expected_by_colour(images).argmax(-1)

    @torch.no_grad()
    def colour_shares(self, images):
        """The soft h(x): each colour's share of the objects expected in each image, (B, len(COLOURS)); `colour`
        is its argmax. A sample's share moves with how red it looks, where its hard label does not. Rows sum to 1,
        except where the detector expects almost no object (under 1e-6 in all: a blank image), whose shares are
        all near 0: a blank adds to no colour's share."""
        by_colour = self.expected_by_colour(images)
        return by_colour / by_colour.sum(-1, keepdim=True).clamp_min(1e-6)


def scene_targets(scene):
    """A scene's counts (12,) and centres (12, 2) (the mean centre of a class's objects, 0.5 if absent)."""
    counts, centres = torch.zeros(len(CLASSES), dtype=torch.long), torch.full((len(CLASSES), 2), 0.5)
    for k, cls in enumerate(CLASSES):
        objs = [o for o in scene.objects if (o.colour, o.shape) == cls]
        counts[k] = min(len(objs), MAX_COUNT)
        if objs:
            centres[k] = torch.tensor([sum(o.cx for o in objs), sum(o.cy for o in objs)]) / len(objs)
    return counts, centres


def relation_probability(relation, a, b):
    """Soft truth of `a <relation> b` for centres a, b (..., 2): far enough along the axis, and further along
    it than across it. Hard truth: > 0.5."""
    dx, dy = b[..., 0] - a[..., 0], b[..., 1] - a[..., 1]
    along, across = {"left of": (dx, dy), "right of": (-dx, dy), "above": (dy, dx), "below": (-dy, dx),
                     "next to": (dx.abs(), dy)}[relation]
    return torch.sigmoid((along - RELATION_MIN) / RELATION_SOFTNESS) * \
        torch.sigmoid((along - across.abs()) / RELATION_SOFTNESS)


def _counts_probability(log_p, wanted):
    """P(every class at its wanted count) (B,), the classes independent: log_p (B, 12, 4), wanted (12,)."""
    return log_p.gather(-1, wanted.expand(len(log_p), -1)[..., None]).squeeze(-1).sum(-1).exp()


def objects_probability(p_counts, labels):
    """P(every class at its named count) (B,): 0 for classes the caption does not name; a colourless caption
    may use any one colour. The relation, if any, is not looked at."""
    log_p = p_counts.clamp_min(1e-12).log()                                 # (B, 12, 4)
    if labels["kind"] == "relation":
        wanted = torch.zeros(len(CLASSES), dtype=torch.long)
        wanted[[CLASSES.index(cls) for cls in zip(labels["colours"], labels["shapes"])]] = 1
        return _counts_probability(log_p, wanted)
    colour, shape, n = labels["colours"][0], labels["shapes"][0], labels["count"]
    total = 0
    for c in [colour] if colour else COLOURS:  # a colourless caption: exactly one colour of the shape used
        wanted = torch.zeros(len(CLASSES), dtype=torch.long)
        wanted[CLASSES.index((c, shape))] = n
        total = total + _counts_probability(log_p, wanted)
    return total


def caption_probability(p_counts, centres, labels, with_relation=True):
    """P(the image shows exactly what the caption names): the named objects (`objects_probability`) and, for
    a relation caption, the relation holding between their centres (unless with_relation=False)."""
    p = objects_probability(p_counts, labels)
    if labels["kind"] == "relation" and with_relation:
        a, b = (CLASSES.index(cls) for cls in zip(labels["colours"], labels["shapes"]))
        p = p * relation_probability(labels["relation"], centres[:, a], centres[:, b])
    return p


def caption_success(p_counts, centres, labels, with_relation=True):
    """The hard verdict: the most likely counts are exactly the named ones and the relation holds (or, with
    with_relation=False, just the named objects)."""
    hard = F.one_hot(p_counts.argmax(-1), MAX_COUNT + 1).float()
    return caption_probability(hard, centres, labels, with_relation) > 0.5


def verdicts(detector, images, prompts):
    """The detector's judgement of each image against its caption, each (B,): the probability that it shows
    exactly what the caption names, whether it does (`caption_success`), and whether it shows exactly the named
    objects wherever they are (with_relation=False)."""
    p, centres = detector.read(images)
    labels = [scenes.parse(prompt) for prompt in prompts]
    each = lambda verdict, **kw: torch.cat(  # noqa: E731
        [verdict(p[i:i + 1], centres[i:i + 1], lab, **kw) for i, lab in enumerate(labels)])
    return each(caption_probability), each(caption_success), each(caption_success, with_relation=False)


class CompositionReward:
    """The paper's compositionality reward in miniature: the detector's probability that the image shows
    what the caption names. info: `success`, the share of images the detector judges fully right, and
    `objects`, the share with exactly the named objects whatever their places (success / objects is how often
    the relation holds when the objects are right)."""

    def __init__(self, detector):
        self.detector = detector

    def __call__(self, images, prompts, metadata):
        reward, success, objects = verdicts(self.detector, images, prompts)
        return reward, {"success": success.float().mean().item(), "objects": objects.float().mean().item()}


# ------------------------------------------------------------------------------------------- preference

def rater_utility(images):
    """The simulated rater's taste, u(x) (B,): the share of the canvas covered by objects, minus how far their
    centre of mass is from the middle, minus three times the share of the 1 px frame they cover."""
    foreground = ((images - torch.tensor(scenes.BACKGROUND).view(3, 1, 1)).abs().amax(1) / 0.3).clamp(0, 1)
    area = foreground.mean((1, 2))                                          # (B,)
    n = images.shape[-1]
    grid = (torch.arange(n, dtype=images.dtype) + 0.5) / n
    mass = foreground.sum((1, 2)).clamp_min(1e-6)
    cx = (foreground * grid).sum((1, 2)) / mass
    cy = (foreground * grid[:, None]).sum((1, 2)) / mass
    off_centre = ((cx - 0.5) ** 2 + (cy - 0.5) ** 2).sqrt()
    ring = torch.ones(n, n, dtype=torch.bool)
    ring[1:-1, 1:-1] = False
    frame = foreground[:, ring].mean(1)
    return area - off_centre - 3 * frame


RATER_BETA = 40.0  # the rater prefers a over b with probability sigmoid(beta (u_a - u_b)) (Bradley-Terry)


def rater_prefers(a, b, generator=None):
    """The simulated rater's noisy choice (B,) bool: True where it prefers image a to image b."""
    p = torch.sigmoid(RATER_BETA * (rater_utility(a) - rater_utility(b)))
    return torch.rand(len(p), generator=generator) < p


class PreferenceModel(nn.Module):
    """Image (B, 3, 16, 16) in [0, 1] -> a scalar score (B,): the learned reward r_phi(x)."""

    def __init__(self, width=32):
        super().__init__()
        self.trunk = _trunk(width)
        self.head = nn.Sequential(nn.Conv2d(2 * width, 2 * width, 3, 2, 1), nn.SiLU(), nn.Flatten(),
                                  nn.Linear(2 * width * 16, 64), nn.SiLU(), nn.Linear(64, 1))

    def forward(self, images):
        return self.head(self.trunk(images * 2 - 1)).squeeze(-1)


def bradley_terry_loss(score_chosen, score_rejected):
    """-log P(chosen > rejected) = -log sigmoid(r(x_w) - r(x_l)), the loss of ImageReward and PickScore."""
    return -F.logsigmoid(score_chosen - score_rejected).mean()


class PreferenceReward:
    """The learned preference score of each image (the paper's ImageReward, in miniature)."""

    def __init__(self, model):
        self.model = model

    @torch.no_grad()
    def __call__(self, images, prompts, metadata):
        return self.model(images.float()), {}


# --------------------------------------------------------------------------------------------- training

def degrade(images, generator):
    """What a generator's samples look like next to clean renders: a little blur, pixel noise, a shift in
    brightness, each of random strength per image."""
    b = len(images)
    rand = lambda *shape: torch.rand(*shape, generator=generator)  # noqa: E731
    blurred = F.avg_pool2d(F.pad(images, (1, 1, 1, 1), mode="replicate"), 3, 1)
    images = torch.lerp(images, blurred, 0.5 * rand(b, 1, 1, 1))
    images = images + 0.08 * rand(b, 1, 1, 1) * torch.randn(images.shape, generator=generator)
    return (images + 0.1 * (rand(b, 1, 1, 1) - 0.5)).clamp(0, 1)


def captioned_scene(rng):
    """A scene of a caption of any kind, held-out relations included, with fair colours."""
    kind = rng.choice(scenes.KINDS)
    split = rng.choice(scenes.SPLITS) if kind == "relation" else "train"
    return scenes.scene_for(rng.choice(scenes.prompts(kind, split)), rng, bias=0.25)


def render_batch(scene_list, generator):
    return degrade(torch.stack([scenes.render(s) for s in scene_list]), generator)  # (B, 3, 16, 16)


def detector_batch(rng, generator, n):
    """Images and targets of n scenes: half captioned, half random (0 to 3 objects)."""
    found = [captioned_scene(rng) if i % 2 else scenes.random_scene(rng) for i in range(n)]
    counts, centres = zip(*map(scene_targets, found))
    return render_batch(found, generator), torch.stack(counts), torch.stack(centres), found


def detector_loss(model, images, counts, centres):
    """Cross-entropy of the counts, plus the squared error of the centres of classes with one object."""
    logits, predicted = model(images)
    single = (counts == 1).float()[..., None]
    position = ((predicted - centres) ** 2 * single).sum() / single.sum().clamp_min(1)
    return F.cross_entropy(logits.flatten(0, 1), counts.flatten()) + 10 * position


def preference_batch(rng, generator, n):
    """n pairs of renders of one caption each, and the rater's choices: (chosen, rejected)."""
    pairs = []
    for _ in range(n):
        caption = captioned_scene(rng).caption
        pairs += [scenes.scene_for(caption, rng, bias=0.25), scenes.scene_for(caption, rng, bias=0.25)]
    images = render_batch(pairs, generator)
    a, b = images[0::2], images[1::2]
    first = rater_prefers(a, b, generator)[:, None, None, None]
    return torch.where(first, a, b), torch.where(first, b, a)


def fit(model, loss_of_batch, steps, lr, log, name):
    """AdamW with a cosine learning rate; loss_of_batch(step) -> scalar loss."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / steps))
        loss = loss_of_batch(step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if (step + 1) % 200 == 0 or step + 1 == steps:
            log(f"{name} step {step + 1}/{steps}: loss {loss.item():.4f}")
    return model.eval()


def train_detector(steps=1500, batch_size=128, lr=2e-3, seed=0, log=print):
    torch.manual_seed(seed)
    rng, generator = random.Random(seed), torch.Generator().manual_seed(seed)
    model = Detector()
    return fit(model, lambda step: detector_loss(model, *detector_batch(rng, generator, batch_size)[:3]),
               steps, lr, log, "detector")


def train_preference(steps=1500, batch_size=64, lr=2e-3, seed=0, log=print):
    torch.manual_seed(seed)
    rng, generator = random.Random(seed), torch.Generator().manual_seed(seed)
    model = PreferenceModel()
    return fit(model, lambda step: bradley_terry_loss(*map(model, preference_batch(rng, generator, batch_size))),
               steps, lr, log, "preference")


# ----------------------------------------------------------------------------------------- measurement

@torch.no_grad()
def detector_accuracy(detector, n=2000, seed=12345):
    """Per-attribute accuracy on n fresh degraded renders (a seed never trained on)."""
    rng, generator = random.Random(seed), torch.Generator().manual_seed(seed)
    images, counts, centres, found = detector_batch(rng, generator, n)
    p, predicted_centres = detector.read(images)
    predicted = p.argmax(-1)                                                # (n, 12)
    by_colour = lambda c: c.view(n, len(COLOURS), len(SHAPES))  # noqa: E731
    acc = {"scene (every class counted right)": (predicted == counts).all(1),
           "colour (objects of each colour)": (by_colour(predicted).sum(2) == by_colour(counts).sum(2)).all(1),
           "shape (objects of each shape)": (by_colour(predicted).sum(1) == by_colour(counts).sum(1)).all(1),
           "count (objects in all)": predicted.sum(1) == counts.sum(1)}
    captioned = [i for i, s in enumerate(found) if s.caption]
    acc["caption judged true"] = torch.stack([caption_success(p[i:i + 1], predicted_centres[i:i + 1],
                                                              found[i].labels)[0] for i in captioned])
    relation, reverse = [], []
    for i in captioned:
        lab = found[i].labels
        if lab["kind"] == "relation":
            a, b = (predicted_centres[i, CLASSES.index(c)] for c in zip(lab["colours"], lab["shapes"]))
            relation.append(relation_probability(lab["relation"], a, b) > 0.5)
            if lab["relation"] != "next to":  # the reverse of "left of" is false
                reverse.append(relation_probability(lab["relation"], b, a) < 0.5)
    acc["relation judged true"] = torch.stack(relation)
    acc["reversed relation judged false"] = torch.stack(reverse)
    return {k: v.float().mean().item() for k, v in acc.items()}


@torch.no_grad()
def preference_agreement(model, n=2000, seed=12345):
    """On n fresh pairs: agreement of the model with the rater's choices, with the rater's noiseless
    preference, and the rater's own agreement with its noiseless preference (the best any model can do)."""
    chosen, rejected = preference_batch(random.Random(seed), torch.Generator().manual_seed(seed), n)
    model_agrees = model(chosen) > model(rejected)
    noiseless = rater_utility(chosen) > rater_utility(rejected)
    return {"with the rater's choices": model_agrees.float().mean().item(),
            "with the rater's noiseless preference": (model_agrees == noiseless).float().mean().item(),
            "rater's choices with its noiseless preference": noiseless.float().mean().item()}


# ------------------------------------------------------------------------------------------ save, load

def save(folder, detector, preference, card):
    """Weights as safetensors (written atomically) and a card.json of how they were made and measured."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name, model in (("detector", detector), ("preference", preference)):
        tmp = folder / f".{name}.safetensors.tmp"
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, tmp)
        os.replace(tmp, folder / f"{name}.safetensors")
    (folder / "card.json").write_text(json.dumps(card, indent=1))


def load(folder):
    """(Detector, PreferenceModel) from a folder written by `save`, in eval mode; no pickle."""
    folder = Path(folder)
    models = []
    for name, cls in (("detector", Detector), ("preference", PreferenceModel)):
        path = folder / f"{name}.safetensors"
        if not path.is_file():
            raise FileNotFoundError(f"no {name} weights at {str(path)!r}; run `minirl train-judges --out {folder}`")
        model = cls()
        model.load_state_dict(load_file(path))
        models.append(model.eval().requires_grad_(False))
    return tuple(models)


def train_judges(out, detector_steps=1500, preference_steps=1500, seed=0, log=print):
    """Train both models, measure them on fresh renders, save them with their card; return the card."""
    import time
    from types import SimpleNamespace

    from minirl.trainer import check_number
    steps = SimpleNamespace(detector_steps=detector_steps, preference_steps=preference_steps)
    for name in ("detector_steps", "preference_steps"):  # 0 would save a model untrained, as if trained
        check_number(steps, name, minimum=1, integer=True)
    start = time.perf_counter()
    detector = train_detector(detector_steps, seed=seed, log=log)
    preference = train_preference(preference_steps, seed=seed, log=log)
    card = {"seed": seed, "detector_steps": detector_steps, "preference_steps": preference_steps,
            "train_seconds": round(time.perf_counter() - start),
            "detector_accuracy": detector_accuracy(detector),
            "preference_agreement": preference_agreement(preference)}
    save(out, detector, preference, card)
    return card
