"""Run by test_multiprocess under `accelerate launch`: one epoch, one update, final trainable weights saved."""

import json
import sys

from accelerate import Accelerator
from safetensors.torch import save_file

from helpers import tiny_trainer, trainable

folder, out = sys.argv[1], sys.argv[2]
acc = Accelerator(cpu=True)
per_process = 8 // acc.num_processes
trainer = tiny_trainer(folder, out, accelerator=acc, samples_per_epoch=8, sample_batch_size=per_process,
                       train_batch_size=per_process, lr=1e-3).train()
if acc.is_main_process:
    save_file({n: v.contiguous() for n, v in trainable(trainer).items()}, f"{out}/final.safetensors")
    json.dump({"num_processes": acc.num_processes}, open(f"{out}/ok.json", "w"))
