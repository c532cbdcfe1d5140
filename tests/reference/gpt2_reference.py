#!/usr/bin/python3
"""Independent GPT-2 reference assembled from torch.nn modules that nobody here wrote (Debian's
python3-torch): each block is a pre-LayerNorm nn.TransformerEncoderLayer with a causal mask,
the embeddings nn.Embedding, the final norm nn.LayerNorm, the head nn.Linear. It reads an HF
checkpoint directory, computes in float64 the logits of a token sequence and a greedy
continuation by full recomputation (no KV cache), and the logits of the whole continued sequence.

usage: gpt2_reference.py MODEL_DIR IDS_JSON OUT_PREFIX [GREEDY_STEPS]
writes OUT_PREFIX.logits (float64 little-endian, [T + GREEDY_STEPS, V]: the logits at every
position of prompt + greedy tokens) and OUT_PREFIX.json (shape, greedy ids, and each greedy step's
margin between the best and second-best logit).
"""
import json
import os
import struct
import sys

import torch
import torch.nn.functional as F
from torch import nn

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


def gelu_tanh(x):
    return F.gelu(x, approximate="tanh")


class Gpt2(nn.Module):
    """GPT-2 as HF's config.json describes it, every piece a stock torch.nn module."""

    def __init__(self, cfg, w):
        super().__init__()
        C, H = cfg["n_embd"], cfg["n_head"]
        Fdim = cfg.get("n_inner") or 4 * C
        eps = cfg.get("layer_norm_epsilon", 1e-5)
        act = cfg.get("activation_function", "gelu_new")
        # HF: "gelu" is the exact erf GELU; "gelu_new" (and its aliases) the tanh approximation.
        activation = {"gelu": F.gelu, "gelu_new": gelu_tanh, "gelu_pytorch_tanh": gelu_tanh, "gelu_fast": gelu_tanh}[act]
        # Options of HF's GPT2Attention that nn.MultiheadAttention cannot express: refuse them.
        if not cfg.get("scale_attn_weights", True) or cfg.get("reorder_and_upcast_attn", False):
            raise SystemExit("unsupported config: scale_attn_weights false or reorder_and_upcast_attn")
        self.wte = nn.Embedding(cfg["vocab_size"], C)
        self.wpe = nn.Embedding(cfg["n_positions"], C)
        self.wte.weight.data.copy_(w["wte.weight"])
        self.wpe.weight.data.copy_(w["wpe.weight"])
        self.blocks = nn.ModuleList()
        for i in range(cfg["n_layer"]):
            p = f"h.{i}."
            # MultiheadAttention splits q, k and v into H contiguous heads of C/H and scales the
            # scores by 1/sqrt(C/H), as GPT-2 does.
            block = nn.TransformerEncoderLayer(
                d_model=C, nhead=H, dim_feedforward=Fdim, dropout=0.0, activation=activation,
                layer_norm_eps=eps, batch_first=True, norm_first=True)
            # Conv1D keeps weights as [in, out]; nn.Linear and in_proj as [out, in].
            in_w = w[p + "attn.c_attn.weight"].t().clone()  # rows: q, then k, then v
            in_b = w[p + "attn.c_attn.bias"].clone()
            if cfg.get("scale_attn_by_inverse_layer_idx", False):
                # HF divides the scores by layer + 1; scaling q's projection is the same product.
                in_w[:C] /= i + 1
                in_b[:C] /= i + 1
            sa = block.self_attn
            sa.in_proj_weight.data.copy_(in_w)
            sa.in_proj_bias.data.copy_(in_b)
            sa.out_proj.weight.data.copy_(w[p + "attn.c_proj.weight"].t())
            sa.out_proj.bias.data.copy_(w[p + "attn.c_proj.bias"])
            block.linear1.weight.data.copy_(w[p + "mlp.c_fc.weight"].t())
            block.linear1.bias.data.copy_(w[p + "mlp.c_fc.bias"])
            block.linear2.weight.data.copy_(w[p + "mlp.c_proj.weight"].t())
            block.linear2.bias.data.copy_(w[p + "mlp.c_proj.bias"])
            block.norm1.weight.data.copy_(w[p + "ln_1.weight"])
            block.norm1.bias.data.copy_(w[p + "ln_1.bias"])
            block.norm2.weight.data.copy_(w[p + "ln_2.weight"])
            block.norm2.bias.data.copy_(w[p + "ln_2.bias"])
            self.blocks.append(block)
        self.ln_f = nn.LayerNorm(C, eps=eps)
        self.ln_f.weight.data.copy_(w["ln_f.weight"])
        self.ln_f.bias.data.copy_(w["ln_f.bias"])
        self.head = nn.Linear(C, cfg["vocab_size"], bias=False)
        # HF ties the head to wte unless the config says otherwise; then lm_head.weight is its own.
        tied = cfg.get("tie_word_embeddings", True)
        self.head.weight.data.copy_(w["wte.weight"] if tied else w["lm_head.weight"])

    def forward(self, ids):  # ids [T] -> logits [T, V]
        t = ids.shape[0]
        x = (self.wte(ids) + self.wpe(torch.arange(t))).unsqueeze(0)
        causal = torch.triu(torch.ones(t, t, dtype=torch.bool), diagonal=1)  # True: may not attend
        for block in self.blocks:
            x = block(x, src_mask=causal)
        return self.head(self.ln_f(x)).squeeze(0)


def main():
    model_dir, ids_path, out_prefix = sys.argv[1:4]
    steps = int(sys.argv[4]) if len(sys.argv) > 4 else 0
    with open(os.path.join(model_dir, "config.json")) as f:
        cfg = json.load(f)
    w = {}
    for k, v in read_weights(model_dir).items():
        k = k[len("transformer.") :] if k.startswith("transformer.") else k
        w[k] = v.to(torch.float64)
    torch.set_default_dtype(torch.float64)  # the modules are created in float64
    model = Gpt2(cfg, w).eval()
    with open(ids_path) as f:
        seq = json.load(f)
    greedy, margins = [], []
    with torch.no_grad():
        for _ in range(steps):
            last = model(torch.tensor(seq))[-1]
            top2 = last.topk(2).values
            greedy.append(int(last.argmax()))
            margins.append(float(top2[0] - top2[1]))
            seq.append(greedy[-1])
        logits = model(torch.tensor(seq))
    with open(out_prefix + ".logits", "wb") as f:
        f.write(logits.contiguous().numpy().astype("<f8").tobytes())
    with open(out_prefix + ".json", "w") as f:
        json.dump({"shape": list(logits.shape), "greedy": greedy, "margins": margins}, f)


if __name__ == "__main__":
    main()
