# Reference for fuji::optim's CPU AdamW: torch.optim.AdamW itself (Debian's python3-torch), run on
# parameters and gradients read from a binary file; writes parameters and moments back.
#
# usage: adamw_reference.py INPUT OUTPUT LR
# INPUT: int64 n, n_decay, steps; float32 params[n]; float32 grads[steps][n]. Elements [0, n_decay)
# form a param group with weight_decay 0.1, the rest one with weight_decay 0 (biases, LayerNorms).
# OUTPUT: float32 params[n], exp_avg[n], exp_avg_sq[n].
import struct
import sys

import torch


def main():
    inp, out, lr = sys.argv[1], sys.argv[2], float(sys.argv[3])
    with open(inp, "rb") as f:
        data = bytearray(f.read())
    n, n_decay, steps = struct.unpack_from("<qqq", data, 0)
    values = torch.frombuffer(data, dtype=torch.float32, offset=24, count=n * (steps + 1)).clone()
    params = values[:n]
    grads = values[n:].view(steps, n)
    decayed = torch.nn.Parameter(params[:n_decay].clone())
    plain = torch.nn.Parameter(params[n_decay:].clone())
    opt = torch.optim.AdamW(
        [{"params": [decayed], "weight_decay": 0.1}, {"params": [plain], "weight_decay": 0.0}],
        lr=lr, betas=(0.9, 0.95), eps=1e-8)
    for s in range(steps):
        decayed.grad = grads[s, :n_decay].clone()
        plain.grad = grads[s, n_decay:].clone()
        opt.step()
    result = []
    for key in (None, "exp_avg", "exp_avg_sq"):
        parts = [p.detach() if key is None else opt.state[p][key] for p in (decayed, plain)]
        result.append(torch.cat(parts).to(torch.float32).contiguous())
    with open(out, "wb") as f:
        for t in result:
            f.write(struct.pack("<%df" % n, *t.tolist()))


if __name__ == "__main__":
    main()
