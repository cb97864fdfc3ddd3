import random
from collections import Counter

import pytest
import torch

from minirl.tinyworld.scenes import (BACKGROUND, COLOURS, HELD_OUT, KINDS, RELATIONS, SHAPES, Scene, batch, parse,
                           prompt_sampler, prompts, random_scene, render, sample_scene, scene_for, swapped)
from minirl.tasks import Task

BG = torch.tensor(BACKGROUND).view(3, 1, 1)
PALETTE = torch.tensor([BACKGROUND, *COLOURS.values()])  # (5, 3): index 0 is the background
NAMES = [None, *COLOURS]


def colour_map(image):
    """The nearest palette entry of every pixel (H, W): an index into NAMES, 0 for the background."""
    distances = ((image.permute(1, 2, 0)[:, :, None, :] - PALETTE) ** 2).sum(-1)  # (H, W, 5)
    return distances.argmin(-1)


def centroid(image, colour):
    ys, xs = torch.nonzero(colour_map(image) == NAMES.index(colour), as_tuple=True)
    return xs.float().mean().item(), ys.float().mean().item()


def test_parse_by_hand():
    assert parse("a green triangle left of a yellow circle") == {
        "kind": "relation", "count": 2, "shapes": ["triangle", "circle"], "colours": ["green", "yellow"],
        "relation": "left of"}
    assert parse("two circles") == {"kind": "count", "count": 2, "shapes": ["circle", "circle"],
                                    "colours": [None, None], "relation": None}
    assert parse("a red square") == {"kind": "single", "count": 1, "shapes": ["square"], "colours": ["red"],
                                     "relation": None}
    for bad in ["a circles", "two circle", "two red circles left of a blue square", "a purple circle",
                "a red circle left of", "a red circle beside a blue square", "A red circle"]:
        with pytest.raises(ValueError, match="not a tiny-world caption"):
            parse(bad)


def test_swapped_names_the_two_objects_in_the_other_order():
    assert swapped("a green triangle left of a yellow circle") == "a yellow circle left of a green triangle"
    assert swapped(swapped("a red square above a blue square")) == "a red square above a blue square"
    with pytest.raises(ValueError, match="only a relation caption"):
        swapped("two red circles")


@pytest.mark.parametrize("kind", KINDS)
def test_every_caption_parses_back_to_its_labels(kind):
    captions = prompts(kind, "train") + prompts(kind, "heldout")
    labels = [parse(c) for c in captions]
    assert all(lab["kind"] == kind and len(lab["shapes"]) == len(lab["colours"]) == lab["count"]
               for lab in labels)
    for caption, lab in zip(captions, labels):  # the caption's words are the labels, in order
        words = [w.removesuffix("s") if w.removesuffix("s") in SHAPES else w for w in caption.split()]
        n = 1 if kind == "count" else lab["count"]  # a count names its shape and colour once
        assert [w for w in words if w in SHAPES] == lab["shapes"][:n]
        assert [w for w in words if w in COLOURS] == [c for c in lab["colours"][:n] if c]
        assert (lab["relation"] is not None and lab["relation"] in caption) == (kind == "relation")
    # every combination the grammar allows, each once
    expected = {"single": 5 * 3, "count": 5 * 3, "relation": 12 * 11 * len(RELATIONS)}[kind]
    assert len(set(captions)) == len(captions) == expected


def test_split_holds_out_relation_pairs_only():
    train, heldout = set(prompts("relation", "train")), set(prompts("relation", "heldout"))
    assert train and heldout and not train & heldout
    for caption in train:
        lab = parse(caption)
        assert not set(zip(lab["colours"], lab["shapes"])) & set(HELD_OUT), caption
    for caption in heldout:
        lab = parse(caption)
        assert set(zip(lab["colours"], lab["shapes"])) & set(HELD_OUT), caption
    for colour, shape in HELD_OUT:  # the held-out pairs are still seen alone and in counts
        assert f"a {colour} {shape}" in prompts("single", "train")
        assert f"two {colour} {shape}s" in prompts("count", "train")
    rng = random.Random(0)
    assert all(sample_scene(rng, split="heldout").caption in heldout for _ in range(50))
    with pytest.raises(ValueError, match="only relation captions are held out"):
        sample_scene(rng, kind="single", split="heldout")
    with pytest.raises(ValueError, match="kinds are"):
        prompts("colour")


@pytest.mark.parametrize("bias", [0.8, 0.25])
def test_colour_bias_when_no_colour_is_named(bias):
    rng = random.Random(0)
    drawn = Counter(scene_for("a circle", rng, bias).objects[0].colour for _ in range(2000))
    assert drawn["red"] / 2000 == pytest.approx(bias, abs=0.03)
    for other in ["green", "blue", "yellow"]:
        assert drawn[other] / 2000 == pytest.approx((1 - bias) / 3, abs=0.03)
    pair = scene_for("two squares", rng, bias).objects
    assert pair[0].colour == pair[1].colour


def test_named_colours_are_always_drawn():
    rng = random.Random(0)
    for caption in prompts("single") + prompts("count") + prompts("relation")[::7]:
        lab = parse(caption)
        if None in lab["colours"]:
            continue
        scene = scene_for(caption, rng, bias=1.0)
        assert [o.colour for o in scene.objects] == lab["colours"]
        assert [o.shape for o in scene.objects] == lab["shapes"]


def test_render_shape_range_and_objects_inside_canvas():
    rng = random.Random(0)
    for size in (16, 32):
        image = render(sample_scene(rng), size)
        assert image.shape == (3, size, size) and image.dtype == torch.float32
        assert image.min() >= 0 and image.max() <= 1
    for _ in range(300):
        for o in sample_scene(rng).objects:
            assert 0 < min(o.cx, o.cy) - o.size / 2 and max(o.cx, o.cy) + o.size / 2 < 1


@pytest.mark.parametrize("shape", SHAPES)
def test_dominant_colour_is_the_named_one(shape):
    rng = random.Random(1)
    for colour in COLOURS:
        pixels = colour_map(render(scene_for(f"a {colour} {shape}", rng)))
        counts = Counter(NAMES[i] for i in pixels.flatten().tolist() if i != 0)
        assert counts.most_common(1)[0][0] == colour and counts[colour] >= 20  # >= 20 of 256 px


def test_relations_hold_on_rendered_pixels():
    rng, checked = random.Random(2), Counter()
    while min(checked[r] for r in RELATIONS) < 10:
        scene = sample_scene(rng, kind="relation")
        (c1, c2), relation = scene.labels["colours"], scene.labels["relation"]
        if c1 == c2:
            continue
        image = render(scene)
        (x1, y1), (x2, y2) = centroid(image, c1), centroid(image, c2)
        dx, dy = x2 - x1, y2 - y1  # in pixels of the 16 px image
        along, across = {"left of": (dx, dy), "right of": (-dx, dy), "above": (dy, dx), "below": (-dy, dx),
                         "next to": (abs(dx), dy)}[relation]
        assert along > 4 and abs(across) < 4, (scene.caption, dx, dy)
        checked[relation] += 1


def test_count_objects_do_not_overlap():
    rng = random.Random(3)
    for _ in range(30):
        scene = sample_scene(rng, kind="count")
        a, b = scene.objects
        assert (a.shape, a.colour) == (b.shape, b.colour)
        # each object alone, drawn sharp at 64 px: their pixels must not meet
        masks = [(render(Scene([o], "", {}), 64, supersample=1) != BG).any(0) for o in (a, b)]
        assert masks[0].any() and masks[1].any() and not (masks[0] & masks[1]).any()


def test_random_scenes_hold_0_to_3_separate_objects_of_every_kind():
    rng = random.Random(5)
    found = [random_scene(rng) for _ in range(300)]
    assert Counter(len(s.objects) for s in found).keys() == {0, 1, 2, 3}
    assert {o.colour for s in found for o in s.objects} == set(COLOURS)
    assert {o.shape for s in found for o in s.objects} == set(SHAPES)
    for scene in found:
        masks = [(render(Scene([o], "", {}), 64, supersample=1) != BG).any(0) for o in scene.objects]
        assert all(m.any() for m in masks)  # each object on the canvas, none touching another
        assert all(not (a & b).any() for i, a in enumerate(masks) for b in masks[i + 1:])


def test_deterministic():
    assert torch.equal(render(sample_scene(random.Random(5))), render(sample_scene(random.Random(5))))
    first, second = batch(random.Random(6), 8), batch(random.Random(6), 8)
    assert torch.equal(first[0], second[0]) and first[1:] == second[1:]
    assert first[0].shape == (8, 3, 16, 16) and len(first[1]) == len(first[2]) == 8


def test_prompt_sampler_feeds_a_task():
    task = Task("colour-parity", prompts=prompt_sampler("single"), reward=lambda *a: None, group_size=2)
    captions, metadata = task.draw(seed=0, epoch=0, task_index=0, indices=range(8))
    assert set(captions) <= set(prompts("single"))
    assert captions[0] == captions[1] and metadata[0]["group"] == 0
    assert all(m["shapes"] == parse(c)["shapes"] and m["colours"] == parse(c)["colours"]
               for c, m in zip(captions, metadata))
