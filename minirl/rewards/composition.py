"""Compositional reward: an open-vocabulary detector's confidence that an image shows the objects, counts and
relation its prompt names. The paper used UniDet's mean confidence of the named objects ("a cat and a dog", "a
bicycle next to a bench"); UniDet was never released, so this uses OWLv2 (transformers `Owlv2ForObjectDetection`).
Why OWLv2 and not Grounding DINO: OWLv2 scores each text query on its own (a sigmoid per box and query), so every
named object gets its confidence directly, where Grounding DINO scores classes as spans of one caption ("a cat. a
dog.") and entangles them; OWLv2 is CLIP (a ViT, CLIP's text tower and tokenizer), so a tiny twin is a small config
with a tokenizer built offline, where Grounding DINO needs a Swin backbone and BERT's tokenizer.

`parse` reads this grammar (any case, a final "." allowed):
    prompt   = ["a photo of " | "an image of "] (object (" and " object)* | object " " relation " " object)
    object   = count " " noun     "a cat", "an apple", "two cups", "3 teddy bears" (a noun of 1-4 words)
    count    = a | an | one..ten | 1..10     a number asks for exactly that many, a/an for at least one
    relation = left of | to the left of | right of | to the right of | above | below | next to
A plural noun is made singular for the detector's query ("cups" -> "cup", "puppies" -> "puppy"); an object is
named once a prompt.

Reward (differentiable in the images): the mean over the prompt's requirements of a confidence. An object of count
n: the n-th highest score among the boxes labelled with it (a box takes the query it scores highest, as
`post_process_object_detection` labels it). The relation: the two best boxes' scores times
sigmoid((along - |across|) / RELATION_SOFTNESS), along and across being the offset of their centres along and
across the relation's axis, in fractions of the padded image. info["success"]: GenEval's binary verdict (boxes
above `threshold`, at most MAX_OBJECTS an object; the counts met, exactly for a number; the relation by
`relative_position` for every pair of counted boxes); info["objects"]: the same without the relation.

Follows djghosh13/geneval's evaluation/evaluate_images.py (`evaluate`, `relative_position`, THRESHOLD 0.3) and
transformers' Owlv2ImageProcessor (torchvision backend); differs from GenEval in one threshold for all prompts
(GenEval's 0.3 and 0.9 for counting were set for its Mask2Former; OWLv2's scores run lower and transformers'
examples use 0.1), in "next to" ("left of" or "right of"), and in having no colour rule.
"""

import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torchvision.transforms.v2.functional import gaussian_blur

from minirl.rewards.clip import projected
from minirl.rewards.images import check_images, normalize
from minirl.rewards.loading import RewardModel, fetch

HUB_ID = "google/owlv2-base-patch16-ensemble"
FILES = ("config.json", ("model.safetensors", "pytorch_model.bin"), "preprocessor_config.json", "tokenizer_config.json",
         "vocab.json", "merges.txt")
THRESHOLD = 0.3             # GenEval's detection threshold
POSITION_THRESHOLD = 0.1    # GenEval: centres must differ by more than 0.1 of the two boxes' summed sizes
MAX_OBJECTS = 16            # GenEval: at most 16 detections an object
RELATION_SOFTNESS = 0.1     # in fractions of the image: how soft the relation factor is

NUMBERS = {"a": 1, "an": 1, **{w: i + 1 for i, w in enumerate(
    "one two three four five six seven eight nine ten".split())}, **{str(i): i for i in range(1, 11)}}
RELATIONS = {"to the left of": "left of", "to the right of": "right of", "left of": "left of",
             "right of": "right of", "above": "above", "below": "below", "next to": "next to"}
RESERVED = set(NUMBERS) | {"the", "and", "or", "of", "to", "left", "right", "above", "below", "next"}
IRREGULAR = {"people": "person", "men": "man", "women": "woman", "children": "child", "mice": "mouse",
             "geese": "goose", "feet": "foot", "teeth": "tooth", "knives": "knife", "leaves": "leaf",
             "wolves": "wolf", "shelves": "shelf", "buses": "bus", "tomatoes": "tomato", "potatoes": "potato",
             "cookies": "cookie", "movies": "movie", "brownies": "brownie", "hoodies": "hoodie",
             "skises": "skis", "scissorses": "scissors",  # GenEval's plurals of its classes skis and scissors
             **{noun: noun for noun in ("skis", "scissors", "pants", "jeans", "shorts", "species", "series")}}
GRAMMAR = ("the composition reward reads '[a photo of | an image of] OBJECT (and OBJECT)*' or "
           "'[a photo of] OBJECT RELATION OBJECT', with OBJECT a count (a, an, one..ten, 1..10) and a noun, "
           f"RELATION one of {sorted(RELATIONS)}; for example 'a cat and a dog', 'two cups left of a bench'")


@dataclass(frozen=True)
class Named:
    name: str      # singular, the detector's query
    count: int
    exact: bool    # the count was a number: more is wrong (GenEval's counting prompts)


@dataclass(frozen=True)
class Composition:
    """A prompt's requirements: the named objects in prompt order, and the first one's position relative to the
    second ("left of", "right of", "above", "below", "next to") or None."""
    objects: tuple
    relation: str | None = None


def singular(noun):
    """The singular of a plural noun's last word, by a small rule set ("teddy bears" -> "teddy bear")."""
    *head, word = noun.split()
    if word in IRREGULAR:
        word = IRREGULAR[word]
    elif word.endswith("ies") and len(word) > 4:
        word = word[:-3] + "y"
    elif word.endswith(("ches", "shes", "xes", "sses", "zzes")):
        word = word[:-2]
    elif word.endswith("s") and not word.endswith(("ss", "us", "is")):
        word = word[:-1]
    return " ".join(head + [word])


def parse(prompt):
    """The Composition a prompt names; ValueError naming the prompt and the grammar if it is outside it."""
    def fail(why):
        return ValueError(f"cannot read the prompt {prompt!r} ({why}); {GRAMMAR}")
    if not isinstance(prompt, str):
        raise fail(f"a prompt is a string, got {type(prompt).__name__}")
    text = re.sub(r"^(a photo of|an image of) ", "", " ".join(prompt.lower().rstrip(". ").split()))
    relation = re.fullmatch(rf"(.+?) ({'|'.join(RELATIONS)}) (.+)", text)
    phrases = [relation[1], relation[3]] if relation else text.split(" and ")
    objects = []
    for phrase in phrases:
        count, _, noun = phrase.partition(" ")
        if count not in NUMBERS or not re.fullmatch(r"[a-z][a-z'-]*( [a-z][a-z'-]*){0,3}", noun) \
                or RESERVED & set(noun.split()):
            raise fail(f"{phrase!r} is not a count and a noun of one to four words")
        n = NUMBERS[count]
        objects.append(Named(singular(noun) if n > 1 else noun, n, count not in ("a", "an")))
    names = [o.name for o in objects]
    if len(set(names)) < len(names):
        raise fail(f"it names {names}: name an object once, with its count ('two cats')")
    return Composition(tuple(objects), RELATIONS[relation[2]] if relation else None)


def query(name):
    """The detector's text query for an object, as transformers' OWLv2 examples write them: "a photo of a cat"."""
    return f"a photo of {'an' if name[0] in 'aeiou' else 'a'} {name}"


def check_prompts(prompts):
    """Read every prompt (before any sampling); one ValueError naming each prompt outside the grammar."""
    bad = []
    for i, prompt in enumerate(prompts):
        try:
            parse(prompt)
        except ValueError:
            bad.append(f"#{i} {prompt!r}")
    if bad:
        raise ValueError(f"the composition reward cannot read {len(bad)} of {len(prompts)} prompts: "
                         f"{', '.join(bad[:10])}{' ...' if len(bad) > 10 else ''}; {GRAMMAR}")


def owlv2_preprocess(images, size, mean, std):
    """Owlv2ImageProcessor on tensors (fp32): pad to a square at the bottom and right with 0 (black; OWLv2's
    official code, transformers since PR #41938; OWL-ViT v1 padded with grey 0.5), blur with a Gaussian of
    sigma (factor - 1) / 2 when shrinking (skimage's anti-aliasing), resize bilinearly to size x size, normalise."""
    h, w = images.shape[-2:]
    side = max(h, w)
    x = F.pad(images.float(), (0, side - w, 0, side - h), value=0.0)     # (B, 3, side, side)
    sigma = (side / size - 1) / 2
    if sigma > 0:
        kernel = 2 * int(torch.tensor(3 * sigma).ceil()) + 1
        x = gaussian_blur(x, [kernel, kernel], [sigma, sigma])
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=False)
    return normalize(x, mean, std)


def relation_factor(relation, centre_a, centre_b, softness=RELATION_SOFTNESS):
    """Soft truth of "a <relation> b" from the two centres (x, y; y down): sigmoid((along - |across|) / softness)."""
    dx, dy = (centre_a - centre_b).unbind(-1)
    along, across = {"left of": (-dx, dy), "right of": (dx, dy), "above": (-dy, dx), "below": (dy, dx),
                     "next to": (dx.abs(), dy)}[relation]
    return torch.sigmoid((along - across.abs()) / softness)


def confidence(scores, labels, boxes, composition):
    """The reward of one image (0-dim): scores (N,), labels (N,) the index of each box's object in
    composition.objects, boxes (N, 4) corners (x0, y0, x1, y1) as fractions of the padded square."""
    ranked = [torch.where(labels == k, scores, 0).sort(descending=True) for k in range(len(composition.objects))]
    terms = [values[o.count - 1] for (values, _), o in zip(ranked, composition.objects)]
    if composition.relation:
        (a, i), (b, j) = ranked
        centres = (boxes[:, :2] + boxes[:, 2:]) / 2                           # (N, 2)
        terms.append(a[0] * b[0] * relation_factor(composition.relation, centres[i[0]], centres[j[0]]))
    return torch.stack(terms).mean()


def relative_position(box_a, box_b):
    """GenEval's positions of box a relative to box b (corners, y down): a subset of {"left of", "right of",
    "above", "below"}; empty when the centres are closer than POSITION_THRESHOLD of the boxes' sizes."""
    offset = (box_a[:2] + box_a[2:] - box_b[:2] - box_b[2:]) / 2
    sizes = (box_a[2:] - box_a[:2]).abs() + (box_b[2:] - box_b[:2]).abs()
    revised = (offset.abs() - POSITION_THRESHOLD * sizes).clamp_min(0) * offset.sign()
    if not revised.any():
        return set()
    dx, dy = (revised / offset.norm()).tolist()
    return {name for name, holds in (("left of", dx < -0.5), ("right of", dx > 0.5), ("above", dy < -0.5),
                                     ("below", dy > 0.5)) if holds}


def verdict(scores, labels, boxes, composition, threshold=THRESHOLD, with_relation=True):
    """GenEval's binary verdict for one image (same arguments as `confidence`)."""
    found = []
    for k, o in enumerate(composition.objects):
        mine = scores.masked_fill((labels != k) | (scores <= threshold), -1.0)
        order = mine.argsort(descending=True)[:min(int((mine > 0).sum()), MAX_OBJECTS)]
        if len(order) < o.count or (o.exact and len(order) > o.count):
            return False
        found.append(boxes[order[:o.count]])
    if not (composition.relation and with_relation):
        return True
    wanted = {"left of", "right of"} if composition.relation == "next to" else {composition.relation}
    return all(wanted & relative_position(a, b) for a in found[0] for b in found[1])


class CompositionReward(RewardModel):
    """OWLv2 on (B, 3, H, W) images in [0, 1] -> the compositional reward (B,) of each image for its prompt."""

    check_prompts = staticmethod(check_prompts)

    def __init__(self, detector, processor, threshold=THRESHOLD):
        super().__init__()
        if not 0 < threshold < 1:
            raise ValueError(f"threshold is a detection score and must be in (0, 1); got {threshold!r}")
        self.detector, self.processor, self.threshold = detector, processor, threshold
        image_processor = processor.image_processor
        self.size, self.mean, self.std = image_processor.size["height"], image_processor.image_mean, \
            image_processor.image_std

    def detect(self, images, queries):
        """Every box's logit for every query (B, N, Q) and its corners (B, N, 4) as fractions of the padded image."""
        pixels = owlv2_preprocess(images, self.size, self.mean, self.std).to(self.dtype)
        feature_map = self.detector.image_embedder(pixel_values=pixels)[0]      # (B, h, w, D)
        features = feature_map.flatten(1, 2)                                     # (B, N, D)
        tokens = self.processor.tokenizer(queries, padding="max_length", truncation=True, return_tensors="pt")
        text = projected(self.detector.owlv2.get_text_features(**tokens.to(self.device)))     # (Q, P)
        text = text / text.norm(dim=-1, keepdim=True)
        logits = self.detector.class_predictor(features, text.expand(len(features), -1, -1))[0]
        cx, cy, w, h = self.detector.box_predictor(features, feature_map).float().unbind(-1)
        return logits.float(), torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], -1)

    def detections(self, images, compositions):
        """Each image's boxes read against its own composition: a list of (scores (N,), labels (N,), corners
        (N, 4)), with labels the index in composition.objects of the object each box scores highest."""
        queries = list(dict.fromkeys(query(o.name) for c in compositions for o in c.objects))
        logits, boxes = self.detect(images, queries)                            # (B, N, Q), (B, N, 4)
        out = []
        for c, logit, box in zip(compositions, logits, boxes):
            best, labels = logit[:, [queries.index(query(o.name)) for o in c.objects]].max(-1)   # (N,)
            out.append((best.sigmoid(), labels, box))
        return out

    def forward(self, images, prompts, metadata=None):
        check_images(images, "composition")
        compositions = [parse(prompt) for prompt in prompts]
        rewards, success, objects = [], [], []
        for c, (scores, labels, boxes) in zip(compositions, self.detections(images, compositions)):
            rewards.append(confidence(scores, labels, boxes, c))
            scores, boxes = scores.detach(), boxes.detach()
            success.append(verdict(scores, labels, boxes, c, self.threshold))
            objects.append(verdict(scores, labels, boxes, c, self.threshold, with_relation=False))
        rewards = torch.stack(rewards)
        return rewards, {"success": sum(success) / len(success), "objects": sum(objects) / len(objects),
                         "score": rewards.mean().item()}


def _config(real_size):
    from transformers import Owlv2Config, Owlv2TextConfig, Owlv2VisionConfig
    if real_size:   # google/owlv2-base-patch16-ensemble's config.json: the defaults, images 960 px, patches 16
        text, vision, projection = Owlv2TextConfig(), Owlv2VisionConfig(image_size=960, patch_size=16), 512
    else:           # transformers' test sizes: 8 x 8 boxes on 32 px images
        tiny = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4)
        text, vision, projection = Owlv2TextConfig(**tiny), Owlv2VisionConfig(image_size=32, patch_size=4, **tiny), 32
    return Owlv2Config(text_config=text.to_dict(), vision_config=vision.to_dict(), projection_dim=projection)


def _write_processor(folder, size):
    """Write the processor files of an OWLv2 hub repository (preprocessor_config.json, CLIP's vocab.json, merges.txt
    and tokenizer files with OWL's 16 text positions and "!" padding) to folder; return the Owlv2Processor."""
    from transformers import Owlv2ImageProcessor, Owlv2Processor
    from minirl.tokenizer import clip_tokenizer
    tokenizer = clip_tokenizer(folder)
    tokenizer.model_max_length, tokenizer.pad_token = 16, "!"
    tokenizer.save_pretrained(folder)
    image_processor = Owlv2ImageProcessor(size={"height": size, "width": size})
    image_processor.save_pretrained(folder)
    return Owlv2Processor(image_processor=image_processor, tokenizer=tokenizer)


def random_model(real_size=False, seed=0, threshold=THRESHOLD):
    """OWLv2 with random weights: the real base-patch16 configuration, or the tiny twin's."""
    with tempfile.TemporaryDirectory() as tmp:
        return _random_model(tmp, real_size, seed, threshold)


def make_tiny(folder, seed=0):
    """Write a tiny random OWLv2 to folder in the hub repository's layout; return the folder."""
    _random_model(folder, False, seed).detector.save_pretrained(folder)
    return Path(folder)


def _random_model(folder, real_size, seed, threshold=THRESHOLD):
    """A random OWLv2 whose processor files are written to folder."""
    from transformers import Owlv2ForObjectDetection
    config = _config(real_size)
    processor = _write_processor(folder, config.vision_config.image_size)
    torch.manual_seed(seed)
    detector = Owlv2ForObjectDetection(config)
    for layer in (detector.class_head.logit_shift, detector.class_head.logit_scale):  # the default init (std 1)
        torch.nn.init.normal_(layer.weight, std=0.02)   # saturates every score at 0 or 1; these keep them near 0.5
    return CompositionReward(detector, processor, threshold).freeze("cpu", torch.float32)


def load(path_or_id, *, device, dtype, threshold=THRESHOLD):
    from transformers import Owlv2ForObjectDetection, Owlv2Processor
    folder = fetch(path_or_id, FILES, "composition", model_type="owlv2")
    detector = Owlv2ForObjectDetection.from_pretrained(folder)
    return CompositionReward(detector, Owlv2Processor.from_pretrained(folder), threshold).freeze(device, dtype)
