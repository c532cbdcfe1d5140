#!/usr/bin/python3
"""Decode benchmark baseline: a Python PyTorch eager GPT-2 loop with a KV cache (preallocated,
as a careful Python implementation would write it) on the same checkpoint fuji runs.

usage: python_decode.py MODEL_DIR PROMPT_IDS(1,2,3) NEW_TOKENS THREADS [fp32|bf16]
prints one JSON line: decode_ms, decode_tokens, decode_tokens_per_s, output_ids
"""
import json
import math
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "reference"))
from gpt2_reference import read_safetensors  # noqa: E402


def main():
    model_dir, ids_text, new_tokens, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[sys.argv[5] if len(sys.argv) > 5 else "fp32"]
    torch.set_num_threads(threads)
    with open(os.path.join(model_dir, "config.json")) as f:
        cfg = json.load(f)
    w = {k.replace("transformer.", ""): v.to(dtype) for k, v in read_safetensors(os.path.join(model_dir, "model.safetensors")).items()}
    L, H, C = cfg["n_layer"], cfg["n_head"], cfg["n_embd"]
    D = C // H
    eps = cfg.get("layer_norm_epsilon", 1e-5)
    approx = "none" if cfg.get("activation_function") == "gelu" else "tanh"
    ids = [int(x) for x in ids_text.split(",")]
    max_len = len(ids) + new_tokens
    keys = [torch.empty(1, H, max_len, D, dtype=dtype) for _ in range(L)]
    values = [torch.empty(1, H, max_len, D, dtype=dtype) for _ in range(L)]
    F = torch.nn.functional

    def forward(tokens, past):
        t = len(tokens)
        x = w["wte.weight"][tokens] + w["wpe.weight"][past : past + t]
        for i in range(L):
            p = f"h.{i}."
            h = F.layer_norm(x, (C,), w[p + "ln_1.weight"], w[p + "ln_1.bias"], eps)
            qkv = torch.addmm(w[p + "attn.c_attn.bias"], h, w[p + "attn.c_attn.weight"])
            q, k, v = (z.view(t, H, D).transpose(0, 1).unsqueeze(0) for z in qkv.split(C, dim=-1))
            keys[i][:, :, past : past + t] = k
            values[i][:, :, past : past + t] = v
            K, V = keys[i][:, :, : past + t], values[i][:, :, : past + t]
            att = (q @ K.transpose(-1, -2)).float() / math.sqrt(D)
            if t > 1:
                att = att.masked_fill(torch.ones(t, past + t, dtype=torch.bool).triu(past + 1), float("-inf"))
            y = (att.softmax(-1).to(dtype) @ V).squeeze(0).transpose(0, 1).reshape(t, C)
            x = x + torch.addmm(w[p + "attn.c_proj.bias"], y, w[p + "attn.c_proj.weight"])
            h = F.layer_norm(x, (C,), w[p + "ln_2.weight"], w[p + "ln_2.bias"], eps)
            h = F.gelu(torch.addmm(w[p + "mlp.c_fc.bias"], h, w[p + "mlp.c_fc.weight"]), approximate=approx)
            x = x + torch.addmm(w[p + "mlp.c_proj.bias"], h, w[p + "mlp.c_proj.weight"])
        x = F.layer_norm(x[-1:], (C,), w["ln_f.weight"], w["ln_f.bias"], eps)
        return (x @ w["wte.weight"].t()).float()

    with torch.inference_mode():
        out = [int(forward(torch.tensor(ids), 0).argmax())]
        start = time.perf_counter()
        for step in range(1, new_tokens):
            out.append(int(forward(torch.tensor([out[-1]]), len(ids) + step - 1).argmax()))
        decode_ms = (time.perf_counter() - start) * 1000
    steps = new_tokens - 1
    print(json.dumps({"decode_ms": decode_ms, "decode_tokens": steps,
                      "decode_tokens_per_s": steps * 1000 / decode_ms, "output_ids": out}))


if __name__ == "__main__":
    main()
