#!/usr/bin/env python3
"""Drives fuji-rank through the GPU checks and writes gpu-results.md: for each Cerebras-GPT shape,
random bf16 weights written to disk, then the seed study's prompt on the GPU (load, prefill,
decode, device peak memory), then the same request again on the resident model.

Environment: FUJI_GPU_CHECK_MODELS (comma list, default all seven), FUJI_GPU_CHECK_DEVICE
(default cuda; cpu for a dry run of this script), FUJI_GPU_CHECK_TOKENS (default 64).
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time

PROMPT = "There are famous mountain like Mt.Fuji in Japan. Please tell me highest mountain in the world."
MODELS = ["111m", "256m", "590m", "1.3b", "2.7b", "6.7b", "13b"]


class Rank:
    """One fuji-rank process: requests on its stdin; with no fd 3 open it writes events on stdout."""

    def __init__(self, path):
        self.proc = subprocess.Popen([path], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.events = self.proc.stdout

    def call(self, request):
        self.proc.stdin.write((json.dumps(request) + "\n").encode())
        self.proc.stdin.flush()
        for line in self.events:
            try:
                event = json.loads(line)
            except ValueError:  # a library's own output on stdout
                continue
            if event.get("id") != request["id"]:
                continue
            if event["event"] == "result":
                return event["result"]
            if event["event"] == "error":
                raise RuntimeError(f"{event['reason']}: {event['message']}")
        raise RuntimeError(f"fuji-rank exited with {self.proc.wait()}")

    def close(self):
        self.proc.stdin.close()
        self.proc.wait()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rank", required=True)
    ap.add_argument("--vocab", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--work", default="/tmp/fuji-gpu-check")
    args = ap.parse_args()
    models = os.environ.get("FUJI_GPU_CHECK_MODELS", ",".join(MODELS)).split(",")
    device = os.environ.get("FUJI_GPU_CHECK_DEVICE", "cuda")
    tokens = int(os.environ.get("FUJI_GPU_CHECK_TOKENS", "64"))
    rows = []
    rank = Rank(args.rank)
    for name in models:
        model_dir = os.path.join(args.work, name)
        shutil.rmtree(model_dir, ignore_errors=True)
        os.makedirs(args.work, exist_ok=True)
        row = {"model": name}
        try:
            start = time.time()
            init = rank.call({"op": "init", "id": f"init-{name}", "arch": name, "out": model_dir,
                              "dtype": "bf16", "seed": 1, "vocab_dir": os.path.abspath(args.vocab)})
            row["parameters"] = init["parameters"]
            row["init_s"] = time.time() - start
            request = {"op": "infer", "model": model_dir, "prompt": PROMPT, "max_new_tokens": tokens,
                       "ignore_eos": True, "precision": "bf16", "device": device}
            first = rank.call(dict(request, id=f"infer-{name}"))
            again = rank.call(dict(request, id=f"again-{name}"))
            row.update(first=first, again=again)
        except RuntimeError as e:
            row["error"] = str(e)
        print(json.dumps({k: v for k, v in row.items() if k not in ("first", "again")}), flush=True)
        rows.append(row)
        shutil.rmtree(model_dir, ignore_errors=True)
    rank.close()

    lines = [f"Device: {device}; bf16 weights (random), prompt of the seed study, {tokens} new tokens, "
             "greedy, EOS ignored.", "",
             "| model | parameters | load (ms) | prefill (ms) | decode (tokens/s) | device peak (MiB) "
             "| reserved peak (MiB) | resident: load (ms) / prefill (ms) / decode (tokens/s) / total (ms) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | {r.get('parameters', '')} | failed: {r['error']} | | | | | |")
            continue
        t, m, a = r["first"]["timings"], r["first"]["memory"], r["again"]["timings"]
        lines.append(f"| {r['model']} | {r['parameters'] / 1e9:.2f}B | {t['load_ms']:.0f} | {t['prefill_ms']:.1f} | "
                     f"{t['decode_tokens_per_s']:.1f} | {m.get('device_peak_mib', 0):.0f} | "
                     f"{m.get('device_reserved_peak_mib', 0):.0f} | {a['load_ms']:.1f} / {a['prefill_ms']:.1f} / "
                     f"{a['decode_tokens_per_s']:.1f} / {a['total_ms']:.0f} |")
    with open(os.path.join(args.out, "gpu-results.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0 if all("error" not in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
