"""CLIP's tokenizer, built offline: open_clip ships CLIP's BPE vocabulary (bpe_simple_vocab_16e6.txt.gz), and a
transformers CLIPTokenizer built from it tokenises exactly as Stable Diffusion's and every OpenAI-BPE CLIP's
(laion's ViT-H/14 included). Kept apart from minirl.sd so that the reward models' twins do not import diffusers.
"""

import gzip
import json
from pathlib import Path

from transformers import CLIPTokenizer


def clip_tokenizer(folder):
    """Write CLIP's vocab.json and merges.txt (from open_clip's BPE file) to `folder`; return the tokenizer."""
    import open_clip
    bpe = Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"
    merges = gzip.open(bpe).read().decode("utf-8").split("\n")[1:49152 - 256 - 2 + 1]
    # the 256 byte symbols in the order of CLIP's bytes_to_unicode()
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) \
        + list(range(ord("®"), ord("ÿ") + 1))
    extra = [b for b in range(256) if b not in printable]
    symbols = [chr(b) for b in printable] + [chr(256 + i) for i in range(len(extra))]
    vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({tok: i for i, tok in enumerate(vocab)}))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    tokenizer = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=77,
                              pad_token="<|endoftext|>")
    tokenizer.save_pretrained(folder)
    return tokenizer
