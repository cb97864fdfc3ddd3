"""Pretraining data for the L_pre regulariser (paper Eq. 9): a folder of images with captions.

A folder in either of the two layouts that LAION-style subsets come in:

    DIR/metadata.jsonl           one JSON object a line, {"file_name": "0001.jpg", "text": "a caption"}
                                 (Hugging Face's ImageFolder convention; file_name relative to DIR, inside it)
    DIR/0001.jpg + DIR/0001.txt  each image beside a caption file of the same stem (img2dataset's "files"
                                 output; subfolders are searched too)

Every entry is checked when the folder is opened, so a bad folder fails before any sampling, naming the file:
text files are UTF-8 (a byte-order mark is dropped), every caption is non-empty, every file_name stays inside
the folder, and every image decodes in full. A header check is not enough: a file cut short opens, then fails
at the L_pre step, after an epoch's sampling, and since that batch is seeded by the epoch, at the same epoch
after every resume. Decoding costs about 10 ms a 512 px JPEG (300 of them: 2-4 s on a busy 2-core machine).
Batches are read on demand: converted to RGB (16-bit greyscale scaled to 8 bits, not clipped to white), the
shorter side resized to the model's resolution (bicubic), centre-cropped, as Stable Diffusion's training data is.
"""

import json
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

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
            decode(path).close()

    def _read_metadata(self):
        entries, metadata = [], self.folder / "metadata.jsonl"
        for n, line in enumerate(read_text(metadata).splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                name, text = record["file_name"], record["text"]
                path = self.folder / name
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise ValueError(f"{metadata} line {n} is not a JSON object with 'file_name' and 'text': "
                                 f"{line[:80]!r}") from e
            if os.path.isabs(name) or os.pardir in Path(os.path.normpath(name)).parts:
                raise ValueError(f"{metadata} line {n} names {name!r}, which is not inside the folder; a "
                                 f"file_name is a path relative to {str(self.folder)!r}, without '..'")
            if not path.is_file():
                raise FileNotFoundError(f"{metadata} line {n} names {str(path)!r}, which does not exist")
            entries.append((path, self._caption(text, f"line {n} of metadata.jsonl")))
        return entries

    def _read_pairs(self):
        images = sorted(p for p in self.folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        missing = [p.name for p in images if not p.with_suffix(".txt").is_file()]
        if missing:
            raise FileNotFoundError(f"--pretrain-data {str(self.folder)!r}: {len(missing)} image(s) have no "
                                    f"caption file, e.g. {missing[:3]} (expected {Path(missing[0]).stem}.txt "
                                    f"beside it); give {FORMAT}")
        return [(p, self._caption(read_text(p.with_suffix(".txt")), p.with_suffix(".txt").name)) for p in images]

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
        with decode(path) as image:
            if image.mode.startswith("I"):  # 16-bit greyscale (PNG): convert("RGB") would clip it to white
                image = Image.fromarray(np.round(np.asarray(image, dtype=np.float64) / 257).astype(np.uint8))
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


def decode(path):
    """The image at `path`, decoded in full (PIL reads only the header until asked); a ValueError naming the file
    if it is truncated, not an image, or over PIL's decompression-bomb limit."""
    try:
        with Image.open(path) as image:  # leaving the block closes the file; the decoded pixels stay
            image.load()
    except (OSError, Image.DecompressionBombError) as e:
        raise ValueError(f"--pretrain-data: cannot read image {str(path)!r} ({e}); replace or remove it") from e
    return image


def read_text(path):
    """A UTF-8 text file (captions, prompt lists) as a str, without a byte-order mark; a ValueError naming the file
    and the line otherwise."""
    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise ValueError(f"{path} line {line} is not UTF-8 (byte {data[e.start]:#04x}); save it as UTF-8") from e
