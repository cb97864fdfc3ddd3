"""Pretraining data for the L_pre regulariser (paper Eq. 9): a folder of images with captions.

A folder in either of the two layouts that LAION-style subsets come in:

    DIR/metadata.jsonl           one JSON object a line, {"file_name": "0001.jpg", "text": "a caption"}
                                 (Hugging Face's ImageFolder convention; file_name relative to DIR)
    DIR/0001.jpg + DIR/0001.txt  each image beside a caption file of the same stem (img2dataset's "files"
                                 output; subfolders are searched too)

Every entry is checked when the folder is opened (the caption is not empty, the image file opens), so a bad
folder fails before any sampling. Batches are read on demand: converted to RGB, the shorter side resized to the
model's resolution (bicubic), centre-cropped, as Stable Diffusion's training data is.
"""

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
FORMAT = ("a folder with metadata.jsonl ({\"file_name\": ..., \"text\": ...} a line) or with each image "
          "beside a .txt caption of the same name")


class CaptionedImages:
    """A pretraining set: `data(generator) -> (images (batch_size, 3, R, R) in [0, 1], captions)`, the
    pretrain_data function of minirl.trainer.Trainer."""

    def __init__(self, folder, resolution, batch_size):
        folder = Path(folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"--pretrain-data {str(folder)!r} is not a folder; give {FORMAT}")
        if not (isinstance(batch_size, int) and batch_size >= 1):
            raise ValueError(f"pretrain batch_size must be an int >= 1; got {batch_size!r}")
        self.folder, self.resolution, self.batch_size = folder, resolution, batch_size
        self.entries = self._read_metadata() if (folder / "metadata.jsonl").is_file() else self._read_pairs()
        if not self.entries:
            raise ValueError(f"--pretrain-data {str(folder)!r} holds no image; give {FORMAT}")
        for path, _ in self.entries:
            try:
                with Image.open(path) as image:
                    image.size  # the header is readable
            except (OSError, UnidentifiedImageError) as e:
                raise ValueError(f"--pretrain-data: cannot read image {str(path)!r} ({e})") from e

    def _read_metadata(self):
        entries = []
        for n, line in enumerate((self.folder / "metadata.jsonl").read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                path, text = self.folder / record["file_name"], record["text"]
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise ValueError(f"{self.folder / 'metadata.jsonl'} line {n} is not a JSON object with "
                                 f"'file_name' and 'text': {line[:80]!r}") from e
            if not path.is_file():
                raise FileNotFoundError(f"{self.folder / 'metadata.jsonl'} line {n} names {str(path)!r}, "
                                        f"which does not exist")
            entries.append((path, self._caption(text, f"line {n} of metadata.jsonl")))
        return entries

    def _read_pairs(self):
        images = sorted(p for p in self.folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        missing = [p.name for p in images if not p.with_suffix(".txt").is_file()]
        if missing:
            raise FileNotFoundError(f"--pretrain-data {str(self.folder)!r}: {len(missing)} image(s) have no "
                                    f"caption file, e.g. {missing[:3]} (expected {Path(missing[0]).stem}.txt "
                                    f"beside it); give {FORMAT}")
        return [(p, self._caption(p.with_suffix(".txt").read_text(), p.with_suffix(".txt").name)) for p in images]

    @staticmethod
    def _caption(text, where):
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"--pretrain-data: the caption in {where} is empty; every image needs a caption")
        return text.strip()

    def __len__(self):
        return len(self.entries)

    def load(self, index):
        """Entry `index` as an image (3, R, R) in [0, 1] and its caption."""
        path, caption = self.entries[index]
        with Image.open(path) as image:
            image = image.convert("RGB")
            scale = self.resolution / min(image.size)
            w, h = max(self.resolution, round(image.width * scale)), max(self.resolution, round(image.height * scale))
            image = image.resize((w, h), Image.BICUBIC)
            left, top = (w - self.resolution) // 2, (h - self.resolution) // 2
            image = image.crop((left, top, left + self.resolution, top + self.resolution))
        pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255)      # (R, R, 3)
        return pixels.permute(2, 0, 1), caption

    def __call__(self, generator):
        picks = torch.randint(len(self.entries), (self.batch_size,), generator=generator).tolist()
        images, captions = zip(*(self.load(i) for i in picks))
        return torch.stack(images), list(captions)                                # (B, 3, R, R)
