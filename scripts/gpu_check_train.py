#!/usr/bin/env python3
"""The fine-tuning GPU checks: fuji-rank gangs driven directly (the GPU machine has no fuji CLI),
on a token cache made here (scripts/gpu-check --prepare) and random initializations made in
memory by the ranks (no multi-GB checkpoint written first).

  nccl-1     one rank over NCCL at ZeRO-3, fp32: same losses as one rank with no collectives
  gloo-2     two ranks over Gloo on CUDA tensors on the one GPU, ZeRO-2, fp32: same losses as
             one rank with the same global batch
  1.3b-z2    bf16 fine-tuning steps of the 1.3B shape, ZeRO-2 over NCCL
  6.7b-off   bf16 fine-tuning steps of the 6.7B shape, ZeRO-2 with optimizer offload

For the two big checks the planner's prediction (`fuji plan --output json`, made by
`scripts/gpu-check --prepare` into --plans) is set beside what was measured: model states against
the trainer's accounting, the device peak against the caching allocator's peak, and the GPU's
memory against NVML's (nvidia-smi, polled during the run, less the reading before it).

Writes train-results.md and train-results.json into --out. FUJI_GPU_CHECK_DEVICE=cpu runs a dry
run of the driver on the CPU build (tiny shapes only).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time


def run_gang(rank_path, spec, ranks, timeout_s):
    """Starts `ranks` fuji-rank processes on one FileStore rendezvous and returns their results."""
    store_dir = tempfile.mkdtemp(prefix="fuji-gpu-check-")
    spec = dict(spec, ranks=ranks, rendezvous="file:" + os.path.join(store_dir, "store"))
    procs = [subprocess.Popen([rank_path], stdin=subprocess.PIPE, stdout=subprocess.PIPE) for _ in range(ranks)]
    results, losses = [None] * ranks, []

    def read(r):
        proc = procs[r]
        request = dict(spec, op="finetune", id=f"ft-{r}", rank=r)
        proc.stdin.write((json.dumps(request) + "\n").encode())
        proc.stdin.close()
        for line in proc.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if event.get("event") == "loss" and r == 0:
                losses.append(event)
            elif event.get("event") == "result":
                results[r] = event["result"]
            elif event.get("event") == "error":
                results[r] = {"error": f"{event['reason']}: {event['message']}"}
        proc.wait()

    threads = [threading.Thread(target=read, args=(r,)) for r in range(ranks)]
    for t in threads:
        t.start()
    deadline = time.time() + timeout_s
    for t in threads:
        t.join(max(0.0, deadline - time.time()))
    for p in procs:
        if p.poll() is None:
            p.kill()
    for r in range(ranks):
        if results[r] is None:
            results[r] = {"error": f"rank {r} gave no result (exit {procs[r].poll()})"}
    return results, losses


class NvmlPeak:
    """Polls nvidia-smi's memory.used of GPU 0 while a check runs; peak_mib less the reading before."""

    def __init__(self):
        self.idle_mib = self.read()
        self.peak_mib = self.idle_mib
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.poll, daemon=True)

    @staticmethod
    def read():
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits", "-i", "0"],
                                 capture_output=True, text=True, timeout=10).stdout
            return int(out.strip().splitlines()[0])
        except (OSError, ValueError, IndexError, subprocess.SubprocessError):
            return None

    def poll(self):
        while not self.stop.is_set():
            used = self.read()
            if used is not None and (self.peak_mib is None or used > self.peak_mib):
                self.peak_mib = used
            self.stop.wait(0.2)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()

    def used_bytes(self):
        if self.idle_mib is None or self.peak_mib is None:
            return None
        return (self.peak_mib - self.idle_mib) * 2**20


def planner_accuracy(plan_file, zero, offload, memory, nvml_bytes):
    """The planner's prediction for (zero, offload) beside the measured figures; {} without a plan."""
    if not plan_file or not os.path.exists(plan_file):
        return {}
    with open(plan_file) as f:
        plans = json.load(f)["plans"]
    p = next((x for x in plans if x["zero"] == zero and x["offload"] == offload), None)
    if p is None:
        return {}
    b = p["breakdown"]
    device_peak = p["gpu_bytes"] - b["allocator_slack_bytes"] - b["cuda_context_bytes"]
    out = {"plan_states_gib": b["peak_device_states_bytes"] / 2**30,
           "plan_device_peak_gib": device_peak / 2**30, "plan_gpu_gib": p["gpu_bytes"] / 2**30,
           "states_ratio": memory["peak_device_states_bytes"] / b["peak_device_states_bytes"],
           "allocator_ratio": memory["peak_device_bytes"] / device_peak}
    if nvml_bytes:
        out.update(nvml_gib=nvml_bytes / 2**30, nvml_ratio=nvml_bytes / p["gpu_bytes"])
    return out


def rel_diff(a, b):
    return max(abs(x - y) / max(abs(y), 1e-12) for x, y in zip(a, b)) if a and b else float("inf")


def train_losses(results):
    return [l["loss"] for l in results[0].get("losses", [])]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rank", required=True)
    ap.add_argument("--tokens", required=True, help="token cache file (.tok)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--plans", default="", help="directory of the planner's plan-<check>.json")
    ap.add_argument("--only", default="")
    args = ap.parse_args()
    device = os.environ.get("FUJI_GPU_CHECK_DEVICE", "cuda")
    dry = device != "cuda"
    base = {"model": "none", "data": "none", "token_cache": os.path.abspath(args.tokens), "device": device,
            "seed": 1, "lr": 1e-4, "warmup_steps": 0, "holdout": 0.05, "eval_batches": 1,
            "collective_timeout_ms": 120000}
    only = [x for x in args.only.split(",") if x]
    rows = []

    def check(name, fn):
        if only and name not in only:
            return
        start = time.time()
        try:
            row = fn()
        except Exception as e:  # noqa: BLE001 - a failed check is a row, not the end of the run
            row = {"error": repr(e)}
        row.update(check=name, seconds=round(time.time() - start, 1))
        print(json.dumps(row), flush=True)
        rows.append(row)

    tiny = dict(base, random_init="tiny", precision="fp32", seq_len=64, steps=8, clip=1.0, grad_accum=2)

    def nccl_one():
        ref, _ = run_gang(args.rank, dict(tiny, zero=0, micro_batch=2), 1, 120)
        got, _ = run_gang(args.rank, dict(tiny, zero=3, micro_batch=2, backend="gloo" if dry else "nccl"), 1, 120)
        for r in ref + got:
            if "error" in r:
                return {"error": r["error"]}
        d = rel_diff(train_losses(got), train_losses(ref))
        return {"ok": d <= 1e-5, "max_rel_loss_diff": d, "losses": train_losses(got)}

    def gloo_two():
        ref, _ = run_gang(args.rank, dict(tiny, zero=0, micro_batch=4), 1, 120)
        got, _ = run_gang(args.rank, dict(tiny, zero=2, micro_batch=2, backend="gloo"), 2, 180)
        for r in ref + got:
            if "error" in r:
                return {"error": r["error"]}
        d = rel_diff(train_losses(got), train_losses(ref))
        return {"ok": d <= 1e-5, "max_rel_loss_diff": d, "losses": train_losses(got)}

    def big(name, arch, params, extra):
        def fn():
            spec = dict(base, random_init=("tiny" if dry else arch), precision="bf16", seq_len=64 if dry else 1024,
                        steps=4, clip=1.0, grad_accum=1, **extra)
            with NvmlPeak() as nvml:
                results, losses = run_gang(args.rank, spec, 1, 400)
            r = results[0]
            if "error" in r:
                return {"error": r["error"]}
            per_step = [l["tokens_per_s"] for l in losses if l.get("split") == "train"][1:]
            tps = statistics.median(per_step) if per_step else r["tokens_per_s"]
            m = r["memory"]
            row = {"ok": True, "parameters": params, "tokens_per_s": tps,
                   "tflops_6n": 6 * params * tps / 1e12, "peak_device_gib": m["peak_device_bytes"] / 2**30,
                   "optimizer_host_gib": m["optimizer_host_bytes"] / 2**30,
                   "grads_host_gib": m["grads_host_bytes"] / 2**30, "peak_rss_gib": m["peak_rss_bytes"] / 2**30,
                   "losses": train_losses(results), "timings": r["timings"], "memory": m}
            if not dry and args.plans:
                row["planner"] = planner_accuracy(os.path.join(args.plans, f"plan-{name}.json"), extra["zero"],
                                                  extra.get("offload", "none"), m, nvml.used_bytes())
            return row
        return fn

    check("nccl-1", nccl_one)
    check("gloo-2", gloo_two)
    check("1.3b-z2", big("1.3b-z2", "cerebras-gpt-1.3b", 1315723264,
                         {"zero": 2, "micro_batch": 8, "backend": "gloo" if dry else "nccl"}))
    check("6.7b-off", big("6.7b-off", "cerebras-gpt-6.7b", 6658404352,
                          {"zero": 2, "offload": "optimizer", "micro_batch": 4}))

    with open(os.path.join(args.out, "train-results.json"), "w") as f:
        json.dump(rows, f, indent=1)
    lines = [f"Device: {device}. Fine-tuning checks (random initializations, token cache of Japanese man pages).", "",
             "| check | result | tokens/s | TFLOPS (6N) | device peak (GiB) | host optimizer (GiB) | detail |",
             "|---|---|---:|---:|---:|---:|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['check']} | failed | | | | | {r['error'][:200]} |")
        elif "tokens_per_s" in r:
            lines.append(f"| {r['check']} | ok | {r['tokens_per_s']:.0f} | {r['tflops_6n']:.1f} | "
                         f"{r['peak_device_gib']:.1f} | {r['optimizer_host_gib']:.1f} | losses {', '.join(f'{x:.3f}' for x in r['losses'])} |")
        else:
            lines.append(f"| {r['check']} | {'ok' if r['ok'] else 'MISMATCH'} | | | | | max relative loss difference "
                         f"{r['max_rel_loss_diff']:.2e} over {len(r['losses'])} steps |")
    planned = [r for r in rows if r.get("planner")]
    if planned:
        lines += ["", "Planner accuracy (predicted by `fuji plan`, measured here; ratio = measured / predicted):", "",
                  "| check | model states (GiB) | ratio | device peak, allocator (GiB) | ratio | GPU, NVML (GiB) | ratio |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for r in planned:
            p, m = r["planner"], r["memory"]
            nvml = (f"{p['nvml_gib']:.1f} vs {p['plan_gpu_gib']:.1f} | {p['nvml_ratio']:.3f}" if "nvml_gib" in p
                    else "- | -")
            lines.append(f"| {r['check']} | {m['peak_device_states_bytes'] / 2**30:.1f} vs {p['plan_states_gib']:.1f} | "
                         f"{p['states_ratio']:.3f} | {m['peak_device_bytes'] / 2**30:.1f} vs "
                         f"{p['plan_device_peak_gib']:.1f} | {p['allocator_ratio']:.3f} | {nvml} |")
    with open(os.path.join(args.out, "train-results.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0 if all("error" not in r and r.get("ok") for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
