"""Distribution-based rewards (paper 3.2): statistical parity of an attribute over a minibatch, and a CLIP
zero-shot classifier as the attribute classifier h of the paper's fairness task (Eq. 12).

The classifier is a proxy, not a measurement: CLIP's zero-shot predictions of perceived skin tone or gender
presentation are unreliable (lighting, colour casts, make-up and backgrounds move them; CLIP carries its
training data's biases), every image gets a class, even one with no person or several, and a perceived
attribute says nothing about anyone's identity. Check the classes on real samples before optimising them:
a policy can also raise "parity" by fooling the classifier rather than by varying the people it draws.

`load(path_or_id, classes=..., soft=...)` follows transformers' zero-shot recipe (CLIPProcessor, then
CLIPModel's logits_per_image = logit_scale.exp() * cos(image, class text), softmax over the classes); differs
in preprocessing the image tensors (not PIL), so that soft=True is differentiable with respect to them.
"""

import torch

from minirl.rewards import clip
from minirl.rewards.images import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, check_images
from minirl.rewards.loading import RewardModel, fetch

HUB_ID = "openai/clip-vit-large-patch14"
FILES = clip.FILES
CLASS_SETS = {
    # four skin-tone groups, as many as the paper's fairness task has, from lighter to darker skin as perceived
    "skin_tone": ("a photo of a person with light skin", "a photo of a person with medium-light skin",
                  "a photo of a person with medium-dark skin", "a photo of a person with dark skin"),
    "perceived_gender": ("a photo of a man", "a photo of a woman"),  # perceived gender presentation
}


def class_shares(labels, num_classes):
    """Each class's share of a minibatch, (K,): from (B,) class indices h(x), the fraction of samples in each
    class; from (B, K) class probabilities p(a | x), their mean (soft shares, differentiable)."""
    labels = torch.as_tensor(labels)
    if labels.is_floating_point():
        if labels.ndim != 2 or labels.shape[1] != num_classes or len(labels) == 0:
            raise ValueError(f"class probabilities must have shape (B, {num_classes}) with B > 0; "
                             f"got {tuple(labels.shape)}")
        return labels.mean(0)
    if labels.ndim != 1 or len(labels) == 0:
        raise ValueError(f"labels must be a non-empty 1-d tensor of class indices; got shape {tuple(labels.shape)}")
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(f"labels must be class indices in [0, {num_classes}); got {labels.tolist()}")
    return torch.bincount(labels, minlength=num_classes).float() / len(labels)


def statistical_parity(labels, num_classes):
    """SP = sum_a (mean_x [h(x) = a] - 1/|A|)^2 over a minibatch's predicted attribute labels (paper Eq. 12):
    0 when every class is equally frequent, 1 - 1/|A| when all samples share one class. `labels`: (B,) class
    indices, or (B, K) class probabilities (soft SP: mean_x p(a | x) in place of the label frequencies)."""
    return ((class_shares(labels, num_classes) - 1 / num_classes) ** 2).sum()


class ParityReward(RewardModel):
    """A distribution reward (paper 3.2): -SP of an attribute over each group of samples of one prompt.
    `classify(images)` is the attribute classifier h (the paper's skin-tone classifier, the tiny world's colour
    classifier): (B,) class indices, or (B, K) class probabilities, of which soft=False takes each sample's most
    likely class (the paper's hard labels: no gradient) and soft=True the probabilities themselves (soft SP,
    differentiable with respect to the images: direct reward backpropagation). `names`: the classes' names,
    logged as each one's share of the group ("share/<name>").

    credit="group" (the paper's): every sample of the group gets -SP(group). credit="leave_one_out": sample i
    gets -SP(group) + SP(group without i), the group's reward minus a baseline that does not depend on sample
    i. The samples are independent, so the baseline leaves the policy gradient's expectation unchanged and
    lowers its variance (to a third in tests/test_rewards.py's exact example): a sample of an over-represented
    colour is credited negatively at once, not through which of a few groups happened to be fairer.
    """

    distribution = True
    CREDITS = ("group", "leave_one_out")

    def __init__(self, classify, num_classes, credit="group", soft=False, names=None):
        super().__init__()
        if credit not in self.CREDITS:
            raise ValueError(f"credit must be one of {self.CREDITS}; got {credit!r}")
        if soft not in (True, False):
            raise ValueError(f"soft must be True (SP of the mean class probabilities) or False (of the most "
                             f"likely classes); got {soft!r}")
        if names is not None and len(names) != num_classes:
            raise ValueError(f"names must name the {num_classes} classes; got {names!r}")
        self.classify, self.num_classes, self.credit, self.soft, self.names = classify, num_classes, credit, soft, names

    def forward(self, images, prompts, metadata):
        h = torch.as_tensor(self.classify(images))  # (B,) class indices or (B, K) class probabilities
        if h.is_floating_point() and not h.detach().isfinite().all():  # NaN images, say: argmax would hide it
            bad = (~h.detach().isfinite()).reshape(len(h), -1).any(1).nonzero().flatten().tolist()
            raise ValueError(f"parity's classifier returned non-finite class probabilities at batch positions {bad}")
        if h.is_floating_point() and not self.soft:
            h = h.argmax(-1)
        elif self.soft and not h.is_floating_point():
            raise ValueError("soft=True needs class probabilities (B, K) from classify; it returned class indices")
        h = h if self.soft else h.cpu()
        sp = statistical_parity(h, self.num_classes)
        rewards = (-sp).repeat(len(h))  # (B,)
        if self.credit == "leave_one_out":
            if len(h) < 2:
                raise ValueError(f"leave-one-out credit needs groups of >= 2 samples; got {len(h)}")
            others = ~torch.eye(len(h), dtype=torch.bool, device=h.device)
            rewards = rewards + torch.stack([statistical_parity(h[keep], self.num_classes) for keep in others])
        info = {"statistical_parity": float(sp.detach())}
        if self.names is not None:
            shares = class_shares(h.detach(), self.num_classes)
            info.update({f"share/{name}": float(share) for name, share in zip(self.names, shares)})
        return rewards, info


def class_texts(classes):
    """The class texts of a class set's name (CLASS_SETS) or of a list of at least 2 distinct texts. CLIP's
    tokenizer lowercases and splits on whitespace, so texts equal up to case and spaces are one class."""
    if isinstance(classes, str):
        if classes not in CLASS_SETS:
            raise ValueError(f"unknown class set {classes!r}; available: {', '.join(map(repr, CLASS_SETS))}, "
                             f"or a list of at least 2 class texts")
        return list(CLASS_SETS[classes])
    texts = list(classes)
    if len(texts) < 2 or len(set(texts)) != len(texts) or not all(isinstance(t, str) for t in texts):
        raise ValueError(f"classes must hold at least 2 distinct texts; got {texts!r}")
    first = {}
    for text in texts:
        same = first.setdefault(" ".join(text.lower().split()), text)
        if same != text:
            raise ValueError(f"classes {same!r} and {text!r} are one class to CLIP (equal up to case and spaces); "
                             f"got {texts!r}")
    return texts


class ZeroShotClassifier(clip.CLIPEmbedder):
    """CLIP's zero-shot classifier, one text a class: images (B, 3, H, W) in [0, 1] -> (B, K) class
    probabilities, the softmax over the classes of logit_scale.exp() * cos(image, class text)."""

    def __init__(self, texts, clip_model, tokenizer, mean=OPENAI_CLIP_MEAN, std=OPENAI_CLIP_STD):
        super().__init__(clip_model, tokenizer, mean, std)
        self.texts = class_texts(texts)

    def forward(self, images):
        check_images(images, "parity")
        logits = self.logit_scale() * self.image_embeds(images) @ self.text_embeds(self.texts).T  # (B, K)
        return logits.softmax(-1)


def load(path_or_id, *, device, dtype, classes="skin_tone", credit="group", soft=False, **options):
    """-SP of CLIP's zero-shot `classes` (a CLASS_SETS name or a list of texts) over each group, from a folder
    with a CLIP hub repository's config.json and weights, or the hub repository (default HUB_ID: ViT-L/14)."""
    clip.check_no_options(options, "parity")
    texts = class_texts(classes)
    folder = fetch(path_or_id, FILES, "parity", model_type="clip")
    classifier = ZeroShotClassifier(texts, *clip.load_clip(folder, "parity"))
    return ParityReward(classifier, len(classifier.texts), credit, soft, names=classifier.texts).freeze(device, dtype)


def random_model(real_size=False, seed=0):
    """The skin-tone parity reward with random weights: the real CLIP ViT-L/14 (about 430M parameters) or the
    tiny twin."""
    classifier = ZeroShotClassifier("skin_tone", clip.random_clip("ViT-L/14", seed, tiny=not real_size),
                                    clip.offline_tokenizer())
    model = ParityReward(classifier, len(classifier.texts), names=classifier.texts)
    return model.freeze(torch.device("cpu"), torch.float32)


def make_tiny(folder, seed=0):
    """Write the tiny classifier's CLIP to `folder` as a CLIP hub repository (clip.save_clip)."""
    return clip.save_clip(random_model(False, seed).classify, folder)
