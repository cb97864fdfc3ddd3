"""A solution of notebook 07's coding exercise: the leave-one-out credit of a group (for teachers)."""

import torch


def leave_one_out_credit(labels, num_classes):
    """labels (B,) class indices of one group -> credits (B,): c_i = -SP(B) + SP(B without sample i)."""
    def sp(group):
        shares = torch.bincount(group, minlength=num_classes).float() / len(group)
        return ((shares - 1 / num_classes) ** 2).sum()
    return torch.stack([-sp(labels) + sp(torch.cat([labels[:i], labels[i + 1:]])) for i in range(len(labels))])
