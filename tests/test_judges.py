"""The tiny world's reward models: hand values of the rewards built on them, the committed weights' accuracy
on fixed renders, and training, saving and loading without pickle."""

import json
import math
import random
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from minirl.tinyworld import judges, scenes
from minirl.rewards import ParityReward, validate

ASSETS = Path(__file__).parents[1] / "assets" / "tinyworld" / "judges"


@pytest.fixture(scope="module")
def committed():
    return judges.load(ASSETS)


def reading(objects):
    """A detector's reading, certain, of these (colour, shape, cx, cy) objects: (p_counts, centres)."""
    scene = scenes.Scene([scenes.Obj(s, c, x, y, 0.4) for c, s, x, y in objects], "", {})
    counts, centres = judges.scene_targets(scene)
    return F.one_hot(counts, judges.MAX_COUNT + 1).float()[None], centres[None]


@pytest.mark.parametrize("caption, expected", [
    ("a red circle left of a blue square", 1.0),
    ("a blue square right of a red circle", 1.0),
    ("a red circle next to a blue square", 1.0),
    ("a red circle right of a blue square", 0.0),   # the relation is false
    ("a red circle above a blue square", 0.0),
    ("a red circle left of a green square", 0.0),   # a named object is missing
    ("a red circle", 0.0),                          # an object the caption does not name is there
    ("two circles", 0.0),
])
def test_caption_probability_by_hand(caption, expected):
    p, centres = reading([("red", "circle", 0.25, 0.5), ("blue", "square", 0.75, 0.52)])
    value = judges.caption_probability(p, centres, scenes.parse(caption)).item()
    assert value == pytest.approx(expected, abs=1e-3)
    assert judges.caption_success(p, centres, scenes.parse(caption)).item() == (expected > 0.5)


def test_objects_verdict_ignores_only_the_relation():
    p, centres = reading([("red", "circle", 0.25, 0.5), ("blue", "square", 0.75, 0.52)])

    def objects(caption):
        return judges.caption_success(p, centres, scenes.parse(caption), with_relation=False).item()
    assert objects("a red circle right of a blue square") and objects("a blue square above a red circle")
    assert not objects("a red circle left of a green square") and not objects("a red circle")


def test_colourless_and_count_captions_accept_any_one_colour():
    p, centres = reading([("yellow", "triangle", 0.3, 0.3), ("yellow", "triangle", 0.7, 0.7)])
    probability = lambda caption: judges.caption_probability(p, centres, scenes.parse(caption)).item()  # noqa: E731
    assert probability("two triangles") == pytest.approx(1.0)
    assert probability("two yellow triangles") == pytest.approx(1.0)
    assert probability("two red triangles") == pytest.approx(0.0)
    assert probability("a triangle") == pytest.approx(0.0)  # two of them, not one
    p_mixed, c_mixed = reading([("red", "triangle", 0.3, 0.3), ("blue", "triangle", 0.7, 0.7)])
    assert judges.caption_probability(p_mixed, c_mixed, scenes.parse("two triangles")).item() == pytest.approx(0.0)


def test_relation_probability_is_a_half_at_the_threshold():
    a = torch.tensor([0.3, 0.5])
    at = torch.tensor([0.3 + judges.RELATION_MIN, 0.5])
    along_is_min = 0.5 / (1 + math.exp(-judges.RELATION_MIN / judges.RELATION_SOFTNESS))  # across 0: the 2nd factor
    assert judges.relation_probability("left of", a, at).item() == pytest.approx(along_is_min, abs=1e-6)
    diagonal = torch.tensor([0.8, 1.0])  # as far across as along: half of sigmoid((0.5 - 0.2) / 0.04)
    assert judges.relation_probability("left of", a, diagonal).item() == pytest.approx(0.5 / (1 + math.exp(-7.5)))
    assert judges.relation_probability("next to", torch.tensor([0.8, 0.5]), torch.tensor([0.1, 0.5])).item() > 0.99


def test_rater_utility_by_hand():
    bg = torch.tensor(scenes.BACKGROUND).view(3, 1, 1)
    blank = bg.expand(3, 16, 16)
    centred = blank.clone()
    centred[:, 4:12, 4:12] = torch.tensor(scenes.COLOURS["blue"]).view(3, 1, 1)  # a quarter of the canvas
    full = torch.tensor(scenes.COLOURS["red"]).view(3, 1, 1).expand(3, 16, 16)
    u = judges.rater_utility(torch.stack([blank, centred, full]))
    assert u[1].item() == pytest.approx(0.25, abs=1e-6)          # area 1/4, centred, off the frame
    assert u[2].item() == pytest.approx(1 - 3, abs=1e-6)         # fills the frame
    assert u[0].item() == pytest.approx(-math.sqrt(0.5), abs=1e-4)  # nothing: counted as far off centre


def test_bradley_terry_loss_by_hand():
    loss = judges.bradley_terry_loss(torch.tensor([2.0, 0.0]), torch.tensor([0.0, 0.0]))
    assert loss.item() == pytest.approx((-math.log(1 / (1 + math.exp(-2))) + math.log(2)) / 2)


def test_committed_detector_matches_its_card(committed):
    detector, _ = committed
    card = json.loads((ASSETS / "card.json").read_text())
    accuracy = judges.detector_accuracy(detector, n=400, seed=7)
    for attribute, value in accuracy.items():
        assert card["detector_accuracy"][attribute] >= 0.95, attribute
        assert value >= 0.95, (attribute, value)


def test_committed_preference_model_matches_its_card(committed):
    _, preference = committed
    card = json.loads((ASSETS / "card.json").read_text())
    assert card["preference_agreement"]["with the rater's choices"] >= 0.85
    agreement = judges.preference_agreement(preference, n=600, seed=7)
    assert agreement["with the rater's choices"] >= 0.85, agreement


def test_composition_reward_ranks_the_right_scene_above_wrong_ones(committed):
    detector, _ = committed
    rng = random.Random(3)
    captions = ["a green triangle left of a yellow circle", "two blue squares", "a red circle"]
    right = torch.stack([scenes.render(scenes.scene_for(c, rng)) for c in captions])
    wrong = torch.stack([scenes.render(scenes.scene_for(c, rng)) for c in
                         ["a yellow circle left of a green triangle", "a blue square", "a green circle"]])
    reward = judges.CompositionReward(detector)
    r_right, info = validate("composition", reward(right, captions, [{}] * 3), 3)
    r_wrong, info_wrong = validate("composition", reward(wrong, captions, [{}] * 3), 3)
    assert (r_right > 0.9).all() and (r_wrong < 0.1).all() and info["success"] == 1.0
    # the swapped pair has the right objects in the wrong places: counted in `objects`, not in `success`
    assert info["objects"] == 1.0 and info_wrong["objects"] == pytest.approx(1 / 3) and info_wrong["success"] == 0


def test_parity_on_the_detector_colours(committed):
    """The issue's hand-made batch: 4 colours in 16 samples -> parity 0; one colour -> 1 - 1/4."""
    detector, _ = committed
    rng = random.Random(0)
    mixed = torch.stack([scenes.render(scenes.scene_for(f"a {c} circle", rng))
                         for c in scenes.COLOURS for _ in range(4)])
    red = torch.stack([scenes.render(scenes.scene_for("a red circle", rng)) for _ in range(16)])
    parity = ParityReward(detector.colour, len(scenes.COLOURS))
    r_mixed, info = validate("parity", parity(mixed, ["a circle"] * 16, [{}] * 16), 16)
    r_red, _ = validate("parity", parity(red, ["a circle"] * 16, [{}] * 16), 16)
    assert torch.equal(r_mixed, torch.zeros(16)) and info["statistical_parity"] == 0
    assert torch.allclose(r_red, torch.full((16,), -0.75))


def test_colour_classifier_always_names_a_colour(committed):
    """No 'no colour' answer: a blank or a noise image still gets one of the four colours."""
    detector, _ = committed
    blank = torch.tensor(scenes.BACKGROUND).view(1, 3, 1, 1).expand(1, 3, 16, 16)
    noise = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    assert all(0 <= c < len(scenes.COLOURS) for c in detector.colour(torch.cat([blank, noise])).tolist())


def test_soft_colour_shares_give_an_all_red_group_a_signal(committed):
    """colour_shares is the soft h(x): rows sum to 1 on renders, its argmax is `colour`, and in a group of 16 red
    circles, where every hard leave-one-out credit is 0 (the dead zone), the soft credits differ and rank the
    samples by how red they look (the less red, the higher)."""
    detector, _ = committed
    rng = random.Random(1)
    red = torch.stack([scenes.render(scenes.scene_for("a circle", rng, bias=1.0)) for _ in range(16)])
    mixed = torch.stack([scenes.render(scenes.scene_for(f"a {c} circle", rng)) for c in scenes.COLOURS])
    shares = detector.colour_shares(torch.cat([red, mixed]))
    torch.testing.assert_close(shares.sum(1), torch.ones(20))
    assert torch.equal(shares.argmax(1), detector.colour(torch.cat([red, mixed])))
    args = (["a circle"] * 16, [{}] * 16)
    hard = ParityReward(detector.colour, len(scenes.COLOURS), "leave_one_out")(red, *args)[0]
    soft = ParityReward(detector.colour_shares, len(scenes.COLOURS), "leave_one_out", soft=True)(red, *args)[0]
    assert torch.equal(hard, torch.zeros(16)) and soft.std() > 0
    assert torch.corrcoef(torch.stack([soft, shares[:16, 0]]))[0, 1] < -0.9


def test_training_learns_and_saves_without_pickle(tmp_path):
    before = judges.detector_loss(judges.Detector(), *judges.detector_batch(random.Random(1), None, 64)[:3])
    card = judges.train_judges(tmp_path, detector_steps=60, preference_steps=60, log=lambda s: None)
    detector, preference = judges.load(tmp_path)
    after = judges.detector_loss(detector, *judges.detector_batch(random.Random(1), None, 64)[:3])
    assert after < before / 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["card.json", "detector.safetensors", "preference.safetensors"]
    assert card["detector_steps"] == 60 and json.loads((tmp_path / "card.json").read_text()) == card
    with pytest.raises(FileNotFoundError, match="minirl train-judges"):
        judges.load(tmp_path / "nothing")
