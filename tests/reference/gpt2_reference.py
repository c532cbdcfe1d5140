#!/usr/bin/python3
"""Independent GPT-2 reference: reads an HF checkpoint directory with nothing but json, struct and
torch (Debian's python3-torch), computes the logits of a token sequence in float64 and a greedy
continuation by full recomputation (no KV cache). Written from the GPT-2 paper and HF's config
semantics, not from fuji's code.

usage: gpt2_reference.py MODEL_DIR IDS_JSON OUT_PREFIX [GREEDY_STEPS]
writes OUT_PREFIX.logits (float64 little-endian, [T, V]) and OUT_PREFIX.json (shape, greedy ids)
"""
import json
import math
import os
import struct
import sys

import torch

DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64}


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    body = data[8 + n :]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        t = torch.frombuffer(bytearray(body[begin:end]), dtype=DTYPES[info["dtype"]])
        out[name] = t.reshape(info["shape"])
    return out


def read_weights(model_dir):
    st = os.path.join(model_dir, "model.safetensors")
    if os.path.exists(st):
        return read_safetensors(st)
    return torch.load(os.path.join(model_dir, "pytorch_model.bin"), map_location="cpu")


def main():
    model_dir, ids_path, out_prefix = sys.argv[1:4]
    steps = int(sys.argv[4]) if len(sys.argv) > 4 else 0
    with open(os.path.join(model_dir, "config.json")) as f:
        cfg = json.load(f)
    raw = read_weights(model_dir)
    w = {}
    for k, v in raw.items():
        k = k[len("transformer.") :] if k.startswith("transformer.") else k
        w[k] = v.to(torch.float64)
    n_layer, n_head, n_embd = cfg["n_layer"], cfg["n_head"], cfg["n_embd"]
    eps = cfg.get("layer_norm_epsilon", 1e-5)
    act = cfg.get("activation_function", "gelu_new")
    head_dim = n_embd // n_head

    def gelu(x):
        if act == "gelu":
            return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))
        return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))

    def layer_norm(x, g, b):
        mean = x.mean(-1, keepdim=True)
        var = ((x - mean) ** 2).mean(-1, keepdim=True)
        return (x - mean) / torch.sqrt(var + eps) * g + b

    def forward(ids):
        t = len(ids)
        x = w["wte.weight"][ids] + w["wpe.weight"][:t]
        causal = torch.tril(torch.ones(t, t, dtype=torch.bool))
        for i in range(n_layer):
            p = f"h.{i}."
            h = layer_norm(x, w[p + "ln_1.weight"], w[p + "ln_1.bias"])
            qkv = h @ w[p + "attn.c_attn.weight"] + w[p + "attn.c_attn.bias"]
            q, k, v = qkv.split(n_embd, dim=-1)
            q = q.view(t, n_head, head_dim).transpose(0, 1)
            k = k.view(t, n_head, head_dim).transpose(0, 1)
            v = v.view(t, n_head, head_dim).transpose(0, 1)
            att = (q @ k.transpose(-1, -2)) / math.sqrt(head_dim)
            att = att.masked_fill(~causal, float("-inf")).softmax(-1)
            y = (att @ v).transpose(0, 1).reshape(t, n_embd)
            x = x + y @ w[p + "attn.c_proj.weight"] + w[p + "attn.c_proj.bias"]
            h = layer_norm(x, w[p + "ln_2.weight"], w[p + "ln_2.bias"])
            h = gelu(h @ w[p + "mlp.c_fc.weight"] + w[p + "mlp.c_fc.bias"])
            x = x + h @ w[p + "mlp.c_proj.weight"] + w[p + "mlp.c_proj.bias"]
        x = layer_norm(x, w["ln_f.weight"], w["ln_f.bias"])
        return x @ w["wte.weight"].t()

    with open(ids_path) as f:
        ids = json.load(f)
    logits = forward(torch.tensor(ids))
    with open(out_prefix + ".logits", "wb") as f:
        f.write(logits.contiguous().numpy().astype("<f8").tobytes())
    seq = list(ids)
    greedy = []
    for _ in range(steps):
        nxt = int(forward(torch.tensor(seq))[-1].argmax())
        greedy.append(nxt)
        seq.append(nxt)
    with open(out_prefix + ".json", "w") as f:
        json.dump({"shape": list(logits.shape), "greedy": greedy}, f)


if __name__ == "__main__":
    main()
