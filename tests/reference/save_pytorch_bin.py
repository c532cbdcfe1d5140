#!/usr/bin/python3
"""Rewrites a checkpoint directory's model.safetensors as the official Cerebras-GPT/HF layout:
pytorch_model.bin written by torch.save (Debian's python3-torch), with "transformer." names, the
per-layer attn.bias / attn.masked_bias mask buffers and a tied lm_head.weight sharing wte's
storage. With --shards 2 it writes pytorch_model-0000i-of-00002.bin and the index, as 13B has.

usage: save_pytorch_bin.py SRC_DIR DST_DIR [--shards N]
"""
import json
import os
import shutil
import sys
from collections import OrderedDict

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gpt2_reference import read_safetensors  # noqa: E402


def main():
    src, dst = sys.argv[1], sys.argv[2]
    shards = int(sys.argv[4]) if len(sys.argv) > 4 and sys.argv[3] == "--shards" else 1
    os.makedirs(dst, exist_ok=True)
    for name in ("config.json", "vocab.json", "merges.txt"):
        if os.path.exists(os.path.join(src, name)):
            shutil.copy(os.path.join(src, name), os.path.join(dst, name))
    with open(os.path.join(src, "config.json")) as f:
        cfg = json.load(f)
    weights = read_safetensors(os.path.join(src, "model.safetensors"))
    state = OrderedDict()
    n = cfg["n_positions"]
    for name, t in weights.items():
        state[name] = t.clone()
    for i in range(cfg["n_layer"]):
        state[f"transformer.h.{i}.attn.bias"] = torch.tril(torch.ones(n, n, dtype=torch.uint8)).view(1, 1, n, n)
        state[f"transformer.h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    state["lm_head.weight"] = state["transformer.wte.weight"]  # tied: one storage
    if shards == 1:
        torch.save(state, os.path.join(dst, "pytorch_model.bin"))
        return
    names = list(state.keys())
    per = (len(names) + shards - 1) // shards
    weight_map = {}
    for s in range(shards):
        file = f"pytorch_model-{s + 1:05d}-of-{shards:05d}.bin"
        part = OrderedDict((k, state[k]) for k in names[s * per : (s + 1) * per])
        torch.save(part, os.path.join(dst, file))
        weight_map.update({k: file for k in part})
    with open(os.path.join(dst, "pytorch_model.bin.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": 0}, "weight_map": weight_map}, f)


if __name__ == "__main__":
    main()
