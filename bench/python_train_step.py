#!/usr/bin/python3
"""Training step baseline: the step fuji-train-bench times, in Python PyTorch eager (Debian's
python3-torch) on the same checkpoint and token ids: a batched causal GPT-2 forward with autograd,
cross-entropy on fp32 logits, backward, clip_grad_norm_(1.0), torch.optim.AdamW (betas 0.9/0.95,
eps 1e-8, weight decay 0.1 on the matrices only).

usage: python_train_step.py MODEL_DIR THREADS [SEQ BATCH STEPS LR]   (defaults 256 4 5 1e-4)
prints one JSON line: step_ms and forward/backward/optimizer ms (medians of STEPS after one warmup
step; optimizer = clipping, AdamW, zero_grad), step_cpu_ms (the process's CPU time, every thread),
losses (warmup first)
"""
import json
import math
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "reference"))
from gpt2_reference import read_safetensors  # noqa: E402


def token_id(b, t, vocab):  # the rule of bench/train_bench.cc
    return (b * 7919 + t * 104729 + 13) % vocab


def main():
    model_dir, threads = sys.argv[1], int(sys.argv[2])
    seq, batch, steps = (int(x) for x in (sys.argv[3:6] if len(sys.argv) > 5 else (256, 4, 5)))
    lr = float(sys.argv[6]) if len(sys.argv) > 6 else 1e-4
    torch.set_num_threads(threads)
    with open(os.path.join(model_dir, "config.json")) as f:
        cfg = json.load(f)
    w = {k.replace("transformer.", ""): v.float().requires_grad_(True)
         for k, v in read_safetensors(os.path.join(model_dir, "model.safetensors")).items()}
    L, H, C, V = cfg["n_layer"], cfg["n_head"], cfg["n_embd"], cfg["vocab_size"]
    D = C // H
    eps = cfg.get("layer_norm_epsilon", 1e-5)
    approx = "none" if cfg.get("activation_function") == "gelu" else "tanh"
    F = torch.nn.functional
    ids = torch.tensor([[token_id(b, t, V) for t in range(seq)] for b in range(batch)])
    targets = torch.tensor([[token_id(b, t + 1, V) for t in range(seq)] for b in range(batch)])
    causal = torch.ones(seq, seq, dtype=torch.bool).triu(1)

    def loss_of(ids, targets):
        B, T = ids.shape
        x = (w["wte.weight"][ids] + w["wpe.weight"][:T]).reshape(B * T, C)
        for i in range(L):
            p = f"h.{i}."
            h = F.layer_norm(x, (C,), w[p + "ln_1.weight"], w[p + "ln_1.bias"], eps)
            qkv = torch.addmm(w[p + "attn.c_attn.bias"], h, w[p + "attn.c_attn.weight"])
            q, k, v = (z.view(B, T, H, D).transpose(1, 2) for z in qkv.split(C, dim=-1))
            att = (q @ k.transpose(-1, -2)) / math.sqrt(D)
            att = att.masked_fill(causal[:T, :T], float("-inf")).softmax(-1)
            y = (att @ v).transpose(1, 2).reshape(B * T, C)
            x = x + torch.addmm(w[p + "attn.c_proj.bias"], y, w[p + "attn.c_proj.weight"])
            h = F.layer_norm(x, (C,), w[p + "ln_2.weight"], w[p + "ln_2.bias"], eps)
            h = F.gelu(torch.addmm(w[p + "mlp.c_fc.bias"], h, w[p + "mlp.c_fc.weight"]), approximate=approx)
            x = x + torch.addmm(w[p + "mlp.c_proj.bias"], h, w[p + "mlp.c_proj.weight"])
        x = F.layer_norm(x, (C,), w["ln_f.weight"], w["ln_f.bias"], eps)
        logits = x @ w.get("lm_head.weight", w["wte.weight"]).t()
        return F.cross_entropy(logits.float(), targets.reshape(-1))

    params = list(w.values())
    optimizer = torch.optim.AdamW(
        [{"params": [p for p in params if p.dim() == 2], "weight_decay": 0.1},
         {"params": [p for p in params if p.dim() != 2], "weight_decay": 0.0}],
        lr=lr, betas=(0.9, 0.95), eps=1e-8)
    losses, grad_norms, times = [], [], []
    for step in range(steps + 1):  # the first is the warmup
        start, cpu_start = time.perf_counter(), time.process_time()
        loss = loss_of(ids, targets)
        losses.append(loss.item())
        forward_end = time.perf_counter()
        loss.backward()
        backward_end = time.perf_counter()
        grad_norms.append(float(torch.nn.utils.clip_grad_norm_(params, 1.0)))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        end, cpu_end = time.perf_counter(), time.process_time()
        if step > 0:  # step, forward, backward, optimizer (clipping included), process CPU in ms
            times.append([(end - start) * 1000, (forward_end - start) * 1000,
                          (backward_end - forward_end) * 1000, (end - backward_end) * 1000,
                          (cpu_end - cpu_start) * 1000])
    step_ms = [t[0] for t in times]
    phase = {name: statistics.median(t[i] for t in times)
             for i, name in enumerate(("step_ms", "forward_ms", "backward_ms", "optimizer_ms", "step_cpu_ms"))}
    print(json.dumps({"bench": "train_step", "impl": "python", "threads": torch.get_num_threads(),
                      "torch": torch.__version__, "seq": seq, "batch": batch, "steps": steps,
                      **phase, "step_ms_all": step_ms,
                      "tokens_per_s": batch * seq * 1000 / statistics.median(step_ms),
                      "losses": losses, "grad_norms": grad_norms}))


if __name__ == "__main__":
    main()
