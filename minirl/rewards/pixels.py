"""Rewards computed from the pixels alone, with no learned weights: DDPO's JPEG size, and the tiny world's
first toy reward (blueness)."""

import io

import numpy as np
import torch
from PIL import Image

from minirl.rewards.images import check_images


def jpeg_size_kb(images, quality=95):
    """The size in kB of each image saved as a JPEG (DDPO's weight-free reward; not differentiable)."""
    pixels = (images.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu()
    sizes = []
    for array in pixels.numpy():
        buffer = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(array)).save(buffer, format="JPEG", quality=quality)
        sizes.append(buffer.tell() / 1000)
    return torch.tensor(sizes)


def jpeg_compressibility(images, prompts, metadata):
    """-(JPEG size in kB): smaller files, i.e. simpler, smoother images, score higher."""
    check_images(images, "jpeg_compressibility")
    return -jpeg_size_kb(images), {}


def jpeg_incompressibility(images, prompts, metadata):
    """+(JPEG size in kB): busier, more detailed images score higher."""
    check_images(images, "jpeg_incompressibility")
    return jpeg_size_kb(images), {}


def blueness(images, prompts, metadata):
    """Blue minus red, averaged over each image's pixels, in [-1, 1] (the tiny world's first reward: notebooks
    3 and 4 turn its red shapes blue)."""
    return (images[:, 2] - images[:, 0]).mean((1, 2)), {}
