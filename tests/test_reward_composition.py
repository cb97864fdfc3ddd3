"""The composition reward (OWLv2 + GenEval's rules): the prompt grammar, the relation and count rules on hand-made
boxes, and the tensor path against transformers' own recipe (Owlv2Processor on PIL images, the model,
post_process_grounded_object_detection) on a tiny random twin."""

import math
import re
import shutil

import pytest
import torch
import torch.nn.functional as F

from minirl.rewards import composition as C
from minirl.rewards.composition import Composition, Named, parse

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def twin(tmp_path_factory):
    return C.make_tiny(tmp_path_factory.mktemp("composition"))


@pytest.fixture(scope="module")
def reward(twin):
    return C.load(twin, device=CPU, dtype=torch.float32)


def smooth_uint8(n, h, w, seed):
    """n smooth random images (n, 3, h, w) as uint8: a 4 x 4 pattern upsampled."""
    low = torch.rand(n, 3, 4, 4, generator=torch.Generator().manual_seed(seed))
    return (F.interpolate(low, size=(h, w), mode="bicubic", align_corners=False).clamp(0, 1) * 255).round().byte()


# ------------------------------------------------------------------------------------------------ grammar

@pytest.mark.parametrize("prompt, objects, relation", [
    ("a cat", [("cat", 1, False)], None),
    ("an apple", [("apple", 1, False)], None),
    ("a photo of a cat", [("cat", 1, False)], None),
    ("An image of an apple.", [("apple", 1, False)], None),
    ("two cups", [("cup", 2, True)], None),
    ("one cup", [("cup", 1, True)], None),
    ("a photo of ten benches", [("bench", 10, True)], None),
    ("3 teddy bears", [("teddy bear", 3, True)], None),
    ("four puppies and a wine glass", [("puppy", 4, True), ("wine glass", 1, False)], None),
    ("two wine glasses", [("wine glass", 2, True)], None),
    ("five people", [("person", 5, True)], None),
    ("two buses and two boxes", [("bus", 2, True), ("box", 2, True)], None),
    ("a cat and a dog and a bird", [("cat", 1, False), ("dog", 1, False), ("bird", 1, False)], None),
    ("a bus", [("bus", 1, False)], None),   # a singular noun is left as it is
    ("a cat left of a dog", [("cat", 1, False), ("dog", 1, False)], "left of"),
    ("a photo of a cat to the left of a dog", [("cat", 1, False), ("dog", 1, False)], "left of"),
    ("a cat right of a dog", [("cat", 1, False), ("dog", 1, False)], "right of"),
    ("a cat to the right of a dog", [("cat", 1, False), ("dog", 1, False)], "right of"),
    ("a bird above two cats", [("bird", 1, False), ("cat", 2, True)], "above"),
    ("a dog below a kite", [("dog", 1, False), ("kite", 1, False)], "below"),
    ("a bicycle next to a bench", [("bicycle", 1, False), ("bench", 1, False)], "next to"),
])
def test_parse_reads_every_form(prompt, objects, relation):
    assert parse(prompt) == Composition(tuple(Named(*o) for o in objects), relation)


@pytest.mark.parametrize("prompt", ["a cat or a dog", "", "the meaning of life", "cats", "eleven cats", "0 cats",
                                    "a cat left of", "a cat and a dog left of a bench", "a cat and a cat",
                                    "a cat next to two cats", "a photo of", "a cup of coffee"])
def test_parse_rejects_prompts_outside_the_grammar(prompt):
    with pytest.raises(ValueError, match=re.escape(f"cannot read the prompt {prompt!r}") + ".*reads '\\[a photo of"):
        parse(prompt)


def test_queries_and_plurals():
    assert [C.query(name) for name in ("cat", "apple", "teddy bear")] == [
        "a photo of a cat", "a photo of an apple", "a photo of a teddy bear"]
    plurals = {"cups": "cup", "benches": "bench", "dishes": "dish", "boxes": "box", "glasses": "glass",
               "puppies": "puppy", "ties": "tie", "cookies": "cookie", "horses": "horse", "shoes": "shoe",
               "knives": "knife", "mice": "mouse", "hot dogs": "hot dog", "skis": "skis",
               "skises": "skis", "scissorses": "scissors", "scissors": "scissors"}  # GenEval's plurals, and English's
    assert {p: C.singular(p) for p in plurals} == plurals
    assert parse("a photo of four skises") == Composition((Named("skis", 4, True),))
    assert parse("two scissors next to a cat").objects[0] == Named("scissors", 2, True)


def test_check_prompts_names_every_bad_prompt_at_once():
    C.check_prompts(["a cat", "two dogs next to a bench"])
    with pytest.raises(ValueError, match=r"cannot read 2 of 3 prompts: #1 'a cat or a dog', #2 ''; "):
        C.check_prompts(["a cat", "a cat or a dog", ""])


# -------------------------------------------------------------------------------- rules on hand-made boxes

@pytest.mark.parametrize("box_b, expected", [
    ([20, 0, 30, 10], {"left of"}),             # offsets (-20, 0), less 0.1 * (10 + 10): (-18, 0) / 20
    ([-20, 0, -10, 10], {"right of"}),
    ([0, 20, 10, 30], {"above"}),                # y points down
    ([0, -20, 10, -10], {"below"}),
    ([20, 20, 30, 30], {"left of", "above"}),   # (-18, -18) / 28.3 = -0.64 on both axes
    ([30, 12, 40, 22], {"left of"}),            # (-28, -10) / 32.3: x -0.87, y -0.31
    ([1, 1, 11, 11], set()),                     # centres 1 apart, inside the 2 px margin
])
def test_relative_position_hand_values(box_b, expected):
    box_a = torch.tensor([0.0, 0, 10, 10])
    assert C.relative_position(box_a, torch.tensor(box_b, dtype=torch.float)) == expected


def test_relation_factor_hand_values():
    a, b = torch.tensor([0.2, 0.5]), torch.tensor([0.7, 0.4])     # a is 0.5 left of b and 0.1 lower
    expected = {"left of": 0.4, "right of": -0.6, "above": -0.6, "below": -0.4, "next to": 0.4}
    for relation, margin in expected.items():   # sigmoid((along - |across|) / 0.1)
        assert C.relation_factor(relation, a, b).item() == pytest.approx(1 / (1 + math.exp(-margin / 0.1)))


def boxes_at(*centres, size=0.2):
    return torch.tensor([[x - size / 2, y - size / 2, x + size / 2, y + size / 2] for x, y in centres])


def test_confidence_and_verdict_hand_values():
    # boxes: a cat at the left (0.9), a dog at the right (0.8), a weak cat (0.2)
    scores, labels = torch.tensor([0.9, 0.8, 0.2]), torch.tensor([0, 1, 0])
    boxes = boxes_at((0.2, 0.5), (0.8, 0.5), (0.5, 0.1))
    left, right = parse("a cat left of a dog"), parse("a cat right of a dog")
    factor = torch.sigmoid(torch.tensor(0.6 / 0.1)).item()
    assert C.confidence(scores, labels, boxes, left).item() == pytest.approx((0.9 + 0.8 + 0.9 * 0.8 * factor) / 3)
    assert C.confidence(scores, labels, boxes, right).item() == pytest.approx((0.9 + 0.8 + 0.72 * (1 - factor)) / 3)
    assert C.verdict(scores, labels, boxes, left) and not C.verdict(scores, labels, boxes, right)
    assert C.verdict(scores, labels, boxes, right, with_relation=False)
    assert C.verdict(scores, labels, boxes, parse("a cat next to a dog"))
    assert not C.verdict(scores, labels, boxes, parse("a cat above a dog"))
    two_cats = parse("two cats and a dog")
    assert C.confidence(scores, labels, boxes, two_cats).item() == pytest.approx((0.2 + 0.8) / 2)  # 2nd best cat
    assert not C.verdict(scores, labels, boxes, two_cats)                      # the 2nd cat is under 0.3
    assert C.verdict(scores, labels, boxes, two_cats, threshold=0.1)
    assert not C.verdict(scores, labels, boxes, parse("one cat and a dog"), threshold=0.1)  # exactly one: 2 seen
    assert C.verdict(scores, labels, boxes, parse("a cat and a dog"), threshold=0.1)       # at least one


def test_verdict_checks_every_counted_pair():
    # GenEval: each counted cat must be left of the dog; the second cat is right of it
    scores, labels = torch.tensor([0.9, 0.8, 0.7]), torch.tensor([0, 0, 1])
    assert C.verdict(scores, labels, boxes_at((0.1, 0.5), (0.3, 0.5), (0.8, 0.5)), parse("two cats left of a dog"))
    assert not C.verdict(scores, labels, boxes_at((0.1, 0.5), (0.9, 0.5), (0.5, 0.5)), parse("two cats left of a dog"))


# ---------------------------------------------------------------------------- against transformers' recipe

@pytest.fixture(scope="module")
def official(twin):
    """The twin read by transformers' own loading code."""
    from transformers import Owlv2ForObjectDetection, Owlv2Processor
    return Owlv2Processor.from_pretrained(twin), Owlv2ForObjectDetection.from_pretrained(twin).eval()


def official_detections(official, pixels, queries):
    """transformers' recipe on one uint8 image (3, H, W): Owlv2Processor on the PIL image, the model, and
    post_process_grounded_object_detection with target_sizes the padded square (boxes in pixels)."""
    from PIL import Image
    processor, model = official
    inputs = processor(text=[queries], images=Image.fromarray(pixels.permute(1, 2, 0).numpy()), return_tensors="pt")
    with torch.no_grad():
        outputs = model(**inputs)
    side = max(pixels.shape[-2:])
    found = processor.post_process_grounded_object_detection(outputs, threshold=0.0, target_sizes=[(side, side)],
                                                             text_labels=[queries])[0]
    return inputs["pixel_values"][0], found


@pytest.mark.parametrize("h, w", [(48, 64), (96, 96), (20, 24)])   # shrink with blur, shrink more, enlarge
def test_matches_the_transformers_recipe(official, reward, h, w):
    pixels = smooth_uint8(2, h, w, seed=h)
    images = pixels.float() / 255
    prompts = ["a cat left of a dog", "two cups"]
    compositions = [parse(p) for p in prompts]
    side = max(h, w)
    ours = reward.detections(images, compositions)
    rewards, info = reward(images, prompts, [{}, {}])
    preprocessed = C.owlv2_preprocess(images, reward.size, reward.mean, reward.std)
    verdicts = []
    for i, c in enumerate(compositions):
        queries = [C.query(o.name) for o in c.objects]
        pixel_values, found = official_detections(official, pixels[i], queries)
        torch.testing.assert_close(preprocessed[i], pixel_values, atol=1e-5, rtol=0)
        scores, labels, boxes = ours[i]
        assert torch.equal(labels, found["labels"])
        torch.testing.assert_close(scores, found["scores"], atol=1e-5, rtol=0)
        torch.testing.assert_close(boxes * side, found["boxes"], atol=1e-4 * side, rtol=0)
        # the reward and GenEval's verdict computed from the official detections by the same rules
        recomputed = C.confidence(found["scores"], found["labels"], found["boxes"] / side, c)
        assert rewards[i].item() == pytest.approx(recomputed.item(), abs=1e-5)
        top = found["scores"].sort(descending=True).values[:9]
        for threshold in ((top[1:] + top[:-1]) / 2).tolist():   # 1 to 8 boxes kept: counts right and wrong
            verdicts.append(C.verdict(scores, labels, boxes, c, threshold))
            assert verdicts[-1] == C.verdict(found["scores"], found["labels"], found["boxes"] / side, c, threshold)
    assert any(verdicts) and not all(verdicts)
    assert set(info) == {"success", "objects", "score"} and info["score"] == pytest.approx(rewards.mean().item())


def test_gradient_reaches_the_images_and_batches_are_independent(reward):
    images = (smooth_uint8(3, 48, 64, seed=1).float() / 255).requires_grad_()
    prompts = ["a cat left of a dog", "two cups", "a bicycle next to a bench"]
    rewards, _ = reward(images, prompts, [{}] * 3)
    rewards.sum().backward()
    assert torch.isfinite(images.grad).all() and images.grad.abs().sum() > 0
    alone, _ = reward(images[1:2].detach(), prompts[1:2], [{}])
    assert alone.item() == pytest.approx(rewards[1].item(), abs=1e-5)


def test_transformers_4_text_features_score_the_same(reward, monkeypatch):
    """pyproject allows transformers >= 4.50, whose get_text_features returns the projected embeddings as a plain
    tensor (5 returns them as pooler_output): both score the same."""
    images, prompts = smooth_uint8(2, 48, 64, seed=2).float() / 255, ["a cat left of a dog", "two cups"]
    with torch.no_grad():
        expected, _ = reward(images, prompts, [{}, {}])
        owlv2 = type(reward.detector.owlv2)
        as_in_4 = owlv2.get_text_features
        monkeypatch.setattr(owlv2, "get_text_features", lambda *a, **k: as_in_4(*a, **k).pooler_output)
        got, _ = reward(images, prompts, [{}, {}])
    assert torch.equal(got, expected)


def test_errors_name_the_bad_value(twin, reward, tmp_path):
    with pytest.raises(ValueError, match="cannot read the prompt 'a cat or a dog'"):
        reward(torch.rand(1, 3, 32, 32), ["a cat or a dog"], [{}])
    with pytest.raises(ValueError, match=r"threshold .* in \(0, 1\); got 1.5"):
        C.load(twin, device=CPU, dtype=torch.float32, threshold=1.5)
    partial = tmp_path / "partial"
    shutil.copytree(twin, partial, ignore=shutil.ignore_patterns("preprocessor_config.json"))
    with pytest.raises(FileNotFoundError, match="missing preprocessor_config.json"):
        C.load(partial, device=CPU, dtype=torch.float32)


def test_tiny_twin_reads_like_the_hub_repository(twin):
    assert sorted(p.name for p in twin.iterdir()) == ["config.json", "merges.txt", "model.safetensors",
                                                      "preprocessor_config.json", "tokenizer.json",
                                                      "tokenizer_config.json", "vocab.json"]
    from transformers import Owlv2Processor
    tokens = Owlv2Processor.from_pretrained(twin)(text=[["a photo of a cat"]], return_tensors="pt")["input_ids"]
    assert tokens.shape == (1, 16) and tokens[0, -1] == 0   # OWL's 16 text positions, padded with "!" (id 0)
    real = C._config(real_size=True)   # google/owlv2-base-patch16-ensemble's configuration (never built here)
    assert (real.vision_config.image_size, real.vision_config.patch_size, real.vision_config.hidden_size,
            real.text_config.hidden_size, real.projection_dim) == (960, 16, 768, 512, 512)
