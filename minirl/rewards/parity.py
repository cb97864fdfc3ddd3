"""Distribution-based rewards (paper 3.2): statistical parity of an attribute over a minibatch."""

import torch


def statistical_parity(labels, num_classes):
    """SP = sum_a (mean_x [h(x) = a] - 1/|A|)^2 over a minibatch's predicted attribute labels (paper Eq. 12):
    0 when every class is equally frequent, 1 - 1/|A| when all samples share one class."""
    labels = torch.as_tensor(labels)
    if labels.ndim != 1 or len(labels) == 0:
        raise ValueError(f"labels must be a non-empty 1-d tensor of class indices; got shape {tuple(labels.shape)}")
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(f"labels must be class indices in [0, {num_classes}); got {labels.tolist()}")
    shares = torch.bincount(labels, minlength=num_classes).float() / len(labels)
    return ((shares - 1 / num_classes) ** 2).sum()


class ParityReward:
    """A distribution reward (paper 3.2): -SP of an attribute over each group of samples of one prompt.
    `classify(images) -> (B,) class indices` is the attribute classifier h (the paper's skin-tone classifier,
    the tiny world's colour classifier).

    credit="group" (the paper's): every sample of the group gets -SP(group). credit="leave_one_out": sample i
    gets -SP(group) + SP(group without i), the group's reward minus a baseline that does not depend on sample
    i. The samples are independent, so the baseline leaves the policy gradient's expectation unchanged and
    lowers its variance (to a third in tests/test_rewards.py's exact example): a sample of an over-represented
    colour is credited negatively at once, not through which of a few groups happened to be fairer.
    """

    distribution = True
    CREDITS = ("group", "leave_one_out")

    def __init__(self, classify, num_classes, credit="group"):
        if credit not in self.CREDITS:
            raise ValueError(f"credit must be one of {self.CREDITS}; got {credit!r}")
        self.classify, self.num_classes, self.credit = classify, num_classes, credit

    def __call__(self, images, prompts, metadata):
        labels = torch.as_tensor(self.classify(images)).cpu()
        sp = statistical_parity(labels, self.num_classes)
        rewards = torch.full((len(labels),), -float(sp))
        if self.credit == "leave_one_out":
            if len(labels) < 2:
                raise ValueError(f"leave-one-out credit needs groups of >= 2 samples; got {len(labels)}")
            others = ~torch.eye(len(labels), dtype=torch.bool)
            rewards += torch.stack([statistical_parity(labels[keep], self.num_classes) for keep in others])
        return rewards, {"statistical_parity": float(sp)}
