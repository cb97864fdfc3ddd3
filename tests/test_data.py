"""The pretraining folder of the L_pre step (minirl.data): what a batch holds, and every bad file named, with its
line where it has one, when the folder is opened (before any sampling), never at the L_pre step of a later
epoch."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from minirl.data import CaptionedImages, read_text


def folder_of(tmp_path, images, captions=None):
    """A metadata.jsonl folder of `images` ({file name: PIL image}), captioned "caption i" unless given."""
    folder = tmp_path / "data"
    folder.mkdir()
    for name, image in images.items():
        image.save(folder / name)
    captions = captions or {name: f"caption {i}" for i, name in enumerate(images)}
    (folder / "metadata.jsonl").write_text("".join(json.dumps({"file_name": n, "text": t}, ensure_ascii=False) + "\n"
                                                   for n, t in captions.items()), encoding="utf-8")
    return folder


def noise(height=24, width=32, seed=0):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


def test_a_batch_is_resized_centre_cropped_and_captioned(tmp_path):
    image = np.zeros((20, 40, 3), dtype=np.uint8)
    image[:, 5:35] = 255                                      # white in the middle, black at the sides
    data = CaptionedImages(folder_of(tmp_path, {"a.png": Image.fromarray(image)}), resolution=10, batch_size=3)
    images, captions = data(torch.Generator().manual_seed(0))
    assert images.shape == (3, 3, 10, 10) and captions == ["caption 0"] * 3
    torch.testing.assert_close(images, torch.ones(3, 3, 10, 10))  # the shorter side to 10, its centre 10x10


def test_a_16_bit_png_keeps_its_grey_levels(tmp_path):
    """PIL opens a 16-bit greyscale PNG as mode I;16, whose convert("RGB") clips every level above 255 to white."""
    levels = np.array([[0, 16384, 32768, 65535]], dtype=np.uint16).repeat(4, 0)         # (4, 4)
    data = CaptionedImages(folder_of(tmp_path, {"g.png": Image.fromarray(levels)}), resolution=4, batch_size=1)
    assert Image.open(data.entries[0][0]).mode == "I;16"
    image, _ = data.load(0)
    expected = torch.tensor(levels / 65535, dtype=torch.float32).expand(3, 4, 4)
    torch.testing.assert_close(image, expected, atol=1 / 255, rtol=0)


def test_a_truncated_image_is_named_when_the_folder_opens(tmp_path):
    """Its header opens; its body ends early: decoding fails, here and not at a later epoch's L_pre step."""
    folder = folder_of(tmp_path, {"whole.jpg": noise(64, 64, seed=1), "cut.jpg": noise(64, 64, seed=2)})
    jpeg = (folder / "cut.jpg").read_bytes()
    (folder / "cut.jpg").write_bytes(jpeg[:len(jpeg) * 2 // 3])
    Image.open(folder / "cut.jpg").size                       # the header is fine
    with pytest.raises(ValueError, match=r"cannot read image '.*cut.jpg' \(image file is truncated"):
        CaptionedImages(folder, resolution=8, batch_size=1)


def test_an_image_over_pils_decompression_bomb_limit_is_named(tmp_path, monkeypatch):
    folder = folder_of(tmp_path, {"big.png": noise(40, 40)})
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)        # 40x40 = 1600 > 2 x 100: PIL refuses to open it
    with pytest.raises(ValueError, match=r"cannot read image '.*big.png' \(Image size \(1600 pixels\) exceeds "
                                         r"limit of 200 pixels"):
        CaptionedImages(folder, resolution=8, batch_size=1)


@pytest.mark.parametrize("name", ["../outside.png", "sub/../../outside.png", "ABSOLUTE"])
def test_a_file_name_outside_the_folder_is_refused(tmp_path, name):
    folder = folder_of(tmp_path, {"in.png": noise()})
    noise().save(tmp_path / "outside.png")
    name = str(tmp_path / "outside.png") if name == "ABSOLUTE" else name
    (folder / "metadata.jsonl").write_text(json.dumps({"file_name": name, "text": "a cat"}) + "\n")
    with pytest.raises(ValueError, match=r"metadata.jsonl line 1 names .*outside.png.*, which is not inside "
                                         r"the folder"):
        CaptionedImages(folder, resolution=8, batch_size=1)


def test_non_utf8_metadata_names_the_file_and_line(tmp_path):
    folder = folder_of(tmp_path, {"a.png": noise(), "b.png": noise()}, {"a.png": "a cat", "b.png": "café"})
    metadata = folder / "metadata.jsonl"
    metadata.write_bytes(metadata.read_text(encoding="utf-8").encode("latin-1"))
    with pytest.raises(ValueError, match=r"metadata.jsonl line 2 is not UTF-8 \(byte 0xe9\)"):
        CaptionedImages(folder, resolution=8, batch_size=1)


def test_a_non_utf8_caption_file_is_named(tmp_path):
    folder = tmp_path / "pairs"
    folder.mkdir()
    noise().save(folder / "a.png")
    (folder / "a.txt").write_bytes("un café".encode("latin-1"))
    with pytest.raises(ValueError, match=r"a.txt line 1 is not UTF-8 \(byte 0xe9\)"):
        CaptionedImages(folder, resolution=8, batch_size=1)


def test_a_byte_order_mark_is_not_part_of_the_text(tmp_path):
    folder = folder_of(tmp_path, {"a.png": noise()}, {"a.png": "a cat"})
    metadata = folder / "metadata.jsonl"
    metadata.write_bytes(b"\xef\xbb\xbf" + metadata.read_bytes())          # as Windows' Notepad saves UTF-8
    assert CaptionedImages(folder, resolution=8, batch_size=1).entries[0][1] == "a cat"
    assert read_text(metadata).startswith("{")
