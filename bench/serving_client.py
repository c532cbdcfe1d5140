#!/usr/bin/env python3
"""Load for fujid's OpenAI-compatible completions endpoint, measured at the client.

Every request is streamed (server-sent events), greedy, with ignore_eos so that each makes exactly
--max-tokens tokens. For each request the client records when it was sent, when the first text
arrived (time to first token) and when the last did; the job behind it (the response id is
"cmpl-JOB") gives the rank's own decode time, so the service's per-token overhead is the client's
decode time over the rank's.

usage: serving_client.py --url URL --ca CA --token TOKEN --model ID --precision fp32|bf16
                         [--ttft-requests 20] [--sweep 1,2,4,8,16,32] [--sequential 4]
                         [--max-tokens 64] [--result-cmd 'fuji result --output json']
Prints one JSON object: ttft (p50/p99 ms at 1 request), sequential tokens/s, the sweep (per level:
aggregate tokens/s, p50/p99 of time to first token and of time per output token), the overhead.
"""
import argparse
import http.client
import json
import ssl
import statistics
import subprocess
import threading
import time
import urllib.parse

WORDS = ("mountain river forest temple summit snow valley lake island harbor castle garden "
         "bridge station market festival season morning evening journey").split()


def prompt_of(tokens):
    # GPT-2's BPE makes each " word" of these one token.
    return "".join(" " + WORDS[i % len(WORDS)] for i in range(tokens))


def percentile(values, p):
    if not values:
        return float("nan")
    s = sorted(values)
    k = (len(s) - 1) * p / 100.0
    f = int(k)
    c = min(f + 1, len(s) - 1)
    return s[f] + (s[c] - s[f]) * (k - f)


class Client:
    def __init__(self, url, ca, token):
        u = urllib.parse.urlparse(url)
        self.host, self.port, self.base = u.hostname, u.port, u.path.rstrip("/")
        self.https = u.scheme == "https"
        self.context = ssl.create_default_context(cafile=ca) if self.https else None
        self.token = token

    def connection(self):
        if self.https:
            return http.client.HTTPSConnection(self.host, self.port, context=self.context, timeout=600)
        return http.client.HTTPConnection(self.host, self.port, timeout=600)

    def stream(self, body):
        """One streamed completion: (sent, first text, last text, job id, text) in seconds."""
        conn = self.connection()
        sent = time.monotonic()
        conn.request("POST", self.base + "/completions", body=json.dumps(body),
                     headers={"Authorization": "Bearer " + self.token, "Content-Type": "application/json"})
        resp = conn.getresponse()
        if resp.status != 200:
            raise RuntimeError(f"HTTP {resp.status}: {resp.read()[:500]!r}")
        first = last = None
        job = None
        text = []
        for raw in resp:
            line = raw.decode("utf-8").rstrip("\r\n")
            if not line.startswith("data: "):
                continue
            data = line[6:]
            if data == "[DONE]":
                break
            chunk = json.loads(data)
            job = job or chunk.get("id")
            piece = chunk["choices"][0].get("text", "") if chunk.get("choices") else ""
            if piece:
                now = time.monotonic()
                first = first or now
                last = now
                text.append(piece)
        conn.close()
        return sent, first, last, job, "".join(text)


def request_body(args, prompt_tokens):
    return {"model": args.model, "prompt": prompt_of(prompt_tokens), "max_tokens": args.max_tokens,
            "temperature": 0, "stream": True, "ignore_eos": True, "precision": args.precision}


def concurrent(client, args, n):
    """n requests at once, prompts spread over 20..200 tokens."""
    results = [None] * n
    barrier = threading.Barrier(n)

    def run(i):
        tokens = 20 + (180 * i // max(n - 1, 1))
        barrier.wait()
        results[i] = client.stream(request_body(args, tokens))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    start = min(r[0] for r in results)
    end = max(r[2] for r in results)
    ttft = [(r[1] - r[0]) * 1000 for r in results]
    tpot = [(r[2] - r[1]) * 1000 / (args.max_tokens - 1) for r in results]
    return {"concurrency": n, "tokens_per_s": n * args.max_tokens / (end - start),
            "ttft_p50_ms": percentile(ttft, 50), "ttft_p99_ms": percentile(ttft, 99),
            "tpot_p50_ms": percentile(tpot, 50), "tpot_p99_ms": percentile(tpot, 99)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--ca", default="")
    ap.add_argument("--token", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--ttft-requests", type=int, default=20)
    ap.add_argument("--sequential", type=int, default=4)
    ap.add_argument("--sweep", default="1,2,4,8,16,32")
    ap.add_argument("--result-cmd", default="")
    args = ap.parse_args()
    client = Client(args.url, args.ca, args.token)
    client.stream(request_body(args, 20))  # the model warm on its device

    # Time to first token at 1 request, and the service's overhead per token against the rank.
    ttft, overheads = [], []
    for i in range(args.ttft_requests):
        sent, first, last, job, _ = client.stream(request_body(args, 20 + (i * 9) % 181))
        ttft.append((first - sent) * 1000)
        if args.result_cmd and job:
            out = subprocess.run(args.result_cmd.split() + [job.split("-")[-1]], capture_output=True, text=True)
            rank = json.loads(out.stdout)["result"]["timings"]
            client_decode = (last - first) * 1000
            if rank.get("decode_ms", 0) > 0:
                overheads.append(client_decode / rank["decode_ms"] - 1)

    # One request at a time.
    seq_start = time.monotonic()
    for i in range(args.sequential):
        client.stream(request_body(args, 20 + (180 * i // max(args.sequential - 1, 1))))
    sequential = args.sequential * args.max_tokens / (time.monotonic() - seq_start)

    sweep = [concurrent(client, args, int(n)) for n in args.sweep.split(",")]
    at16 = next((s for s in sweep if s["concurrency"] == 16), None)
    print(json.dumps({
        "precision": args.precision,
        "ttft_p50_ms": percentile(ttft, 50), "ttft_p99_ms": percentile(ttft, 99), "ttft_requests": len(ttft),
        "overhead_per_token_median": statistics.median(overheads) if overheads else None,
        "overhead_per_token_max": max(overheads) if overheads else None,
        "sequential_tokens_per_s": sequential,
        "ratio_16_over_sequential": at16["tokens_per_s"] / sequential if at16 else None,
        "sweep": sweep,
    }))


if __name__ == "__main__":
    main()
