"""Image preprocessing of the reward models, on tensors: differentiable, batched, on any device.

The official recipes resize PIL images (bicubic, antialiased) and quantise them to 8 bits; here the same
geometry runs on (B, 3, H, W) float tensors in [0, 1] with torch's antialiased bicubic interpolation, so that
gradients reach the image. The two agree closely but not bit for bit: each reward's reference test measures
the difference in score against the official PIL / processor path on the same images.
"""

import torch
import torch.nn.functional as F

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)   # CLIP's normalisation, used by every CLIP reward
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def check_images(images, name):
    """Raise a clear error unless `images` is a float (B, 3, H, W) tensor."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"{name} takes images as a (B, 3, H, W) float tensor in [0, 1]; got {shape}")
    if not images.is_floating_point():
        raise TypeError(f"{name} takes float images in [0, 1]; got dtype {images.dtype} (divide uint8 by 255)")


def resize(images, size):
    """Bicubic, antialiased resize to (h, w), clamped to [0, 1] as an 8-bit image would be."""
    return F.interpolate(images, size=size, mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)


def resize_shortest_side(images, size):
    """Resize so that the shorter side is `size`, keeping the aspect ratio (torchvision's Resize(size), CLIP's
    processor)."""
    h, w = images.shape[-2:]
    short, long = min(h, w), max(h, w)
    long = int(size * long / short)
    return resize(images, (size, long) if h <= w else (long, size))


def center_crop(images, size):
    """The central size x size square (top-left corner rounded as torchvision's CenterCrop)."""
    h, w = images.shape[-2:]
    top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
    return images[..., top:top + size, left:left + size]


def resize_longest_side_and_pad(images, size, fill=0.0):
    """Resize so that the longer side is `size`, then pad to size x size with `fill`, the image centred
    (HPSv2's ResizeMaxSize)."""
    h, w = images.shape[-2:]
    scale = size / max(h, w)
    new_h, new_w = round(h * scale), round(w * scale)
    images = resize(images, (new_h, new_w))
    top, left = (size - new_h) // 2, (size - new_w) // 2
    return F.pad(images, (left, size - new_w - left, top, size - new_h - top), value=fill)


def normalize(images, mean=OPENAI_CLIP_MEAN, std=OPENAI_CLIP_STD):
    mean = torch.tensor(mean, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    std = torch.tensor(std, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    return (images - mean) / std


def clip_preprocess(images, size, mean=OPENAI_CLIP_MEAN, std=OPENAI_CLIP_STD):
    """CLIP's preprocessing on tensors: shorter side to `size` (bicubic), centre crop, normalise. fp32."""
    return normalize(center_crop(resize_shortest_side(images.float(), size), size), mean, std)
