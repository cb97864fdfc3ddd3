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
RANGE_TOLERANCE = 0.01  # how far outside [0, 1] an image's pixels may be (a bicubic resize overshoots a little)


def check_images(images, name):
    """Raise a clear error unless `images` is what every reward takes: a float (B, 3, H, W) torch.Tensor of
    finite values in [0, 1] (up to RANGE_TOLERANCE: a resize's overshoot passes, images in [-1, 1] do not)."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
        got = f"shape {tuple(images.shape)}" if isinstance(images, torch.Tensor) else \
            f"a {type(images).__module__}.{type(images).__qualname__}".replace("builtins.", "")
        raise ValueError(f"{name} takes images as a (B, 3, H, W) float torch.Tensor in [0, 1]; got {got}")
    if not images.is_floating_point():
        raise TypeError(f"{name} takes float images in [0, 1]; got dtype {images.dtype} (divide uint8 by 255)")
    pixels = images.detach()
    bad = ~pixels.isfinite().flatten(1).all(1)  # (B,)
    if bad.any():
        raise ValueError(f"{name} got non-finite pixels (nan or inf) in the images at batch positions "
                         f"{bad.nonzero().flatten().tolist()}; images must be finite, in [0, 1]")
    low, high = (pixels.min().item(), pixels.max().item()) if pixels.numel() else (0, 1)
    if low < -RANGE_TOLERANCE or high > 1 + RANGE_TOLERANCE:
        hint = " (images in [-1, 1]: pass (images + 1) / 2)" if low < 0 else \
            " (images in [0, 255]: pass images / 255)" if high > 1.5 else ""
        raise ValueError(f"{name} takes images in [0, 1]; got values in [{low:.2f}, {high:.2f}]{hint}")


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


def center_crop(images, size, offset=round):
    """The central size x size square. `offset` turns the corner's fractional offset into pixels: `round` as
    torchvision's CenterCrop (OpenAI CLIP's own preprocessing, ImageReward, CLIPScore, LAION's aesthetic
    predictor), `math.floor` as transformers' CLIPProcessor (PickScore, the zero-shot classifier). They can
    differ by a pixel where the side less `size` is odd: 227 px cropped to 224 is offset 1.5, rounded to 2 (Python
    rounds halves to even) and floored to 1."""
    h, w = images.shape[-2:]
    top, left = int(offset((h - size) / 2)), int(offset((w - size) / 2))
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


def clip_preprocess(images, size, mean=OPENAI_CLIP_MEAN, std=OPENAI_CLIP_STD, offset=round):
    """CLIP's preprocessing on tensors: shorter side to `size` (bicubic), centre crop (`offset`: see
    center_crop), normalise. fp32."""
    return normalize(center_crop(resize_shortest_side(images.float(), size), size, offset), mean, std)
