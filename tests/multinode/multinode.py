#!/usr/bin/env python3
"""fuji across nodes, on one machine: fujid and two fuji-agents, each in its own network namespace
(joined by a bridge, as nodes are by a switch) and its own mount namespace, run fine-tunes whose
ranks span both agents through `fuji submit finetune`.

Scenarios (each with its own job; the cluster is shared):
  split        a 4-rank ZeRO-3 fine-tune placed as 2 + 2 on node-a and node-b (--nodes 2) gives the
               losses of the same run on node-a alone (--nodes 1; relative 1e-5) and its final
               weights (1e-4); `fuji show` names both agents and their ranks, its timings the 4
               global ranks and its memory samples both agents
  not_shared   a --save-to that is a directory private to each agent's mount namespace (a tmpfs
               each mounts at the same path) is refused in one line naming two agents
  cut_link     node-b's link goes down mid-run: the gang fails on both nodes within the collective
               timeout (plus the lease and a grace), nothing hangs, no rank is left running; with
               the link back the job is retried and succeeds
  kill_agent   kill -9 of node-b's agent mid-run: node-a's ranks are gone within the collective
               timeout and the lease; the job waits for capacity, node-b's agent comes back, and
               the job resumes from its last checkpoint (a later step than 0) and succeeds

  bench        (not run by default; bench/run_multinode_bench.sh) side by side, --rounds times: the
               2 + 2 run's step time against one agent's, and the bytes node-b's ranks sent
               against ZeRO-3's arithmetic

Usage (as root, after `scripts/build fuji fujid fuji-agent fuji-rank`):
  tests/multinode/multinode.py --bin build/bin [--work-dir DIR] [--keep] [--only split,cut_link]

Exit status: 0 when every scenario held, 1 when one failed, 77 when the test cannot run here (not
root, no `ip`, no user fuji, or binaries missing).
"""

import argparse
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time

# The nodes' subnet: one per run (by pid), so that two runs on one machine do not share addresses.
SUBNET = f"10.78.{os.getpid() % 250 + 1}"
FUJID_IP = f"{SUBNET}.1"
BRIDGE_IP = f"{SUBNET}.254"
NODES = {"node-a": (f"{SUBNET}.11", 4), "node-b": (f"{SUBNET}.12", 2)}  # address, CPU devices
PORT = 7443
SCENARIOS = ("split", "not_shared", "cut_link", "kill_agent")


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def sh(*argv, check=True):
    r = subprocess.run(list(argv), capture_output=True, text=True)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: exit {r.returncode}: {r.stderr.strip()[:300]}")
    return r


def read_safetensors(path):
    """{name: (dtype, shape, list of floats)} of an F32/BF16 safetensors file."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        begin, end = meta["data_offsets"]
        raw = data[begin:end]
        if meta["dtype"] == "F32":
            values = struct.unpack(f"<{len(raw) // 4}f", raw)
        elif meta["dtype"] == "BF16":
            values = [struct.unpack("<f", b"\0\0" + raw[i:i + 2])[0] for i in range(0, len(raw), 2)]
        else:
            values = list(raw)
        out[name] = (meta["dtype"], meta["shape"], values)
    return out


class Cluster:
    def __init__(self, args):
        self.args = args
        self.bin = os.path.abspath(args.bin)
        self.work = os.path.abspath(args.work_dir)
        self.tag = f"fmn{os.getpid() % 100000}"
        self.ns = {"fujid": f"{self.tag}-d", "node-a": f"{self.tag}-a", "node-b": f"{self.tag}-b"}
        self.bridge = f"{self.tag}br"
        self.veth = {k: f"{self.tag}{k[-1]}" for k in self.ns}  # root-side ends
        self.data = os.path.join(self.work, "data")
        self.private = os.path.join(self.work, "private")  # a tmpfs per agent's mount namespace
        self.state = os.path.join(self.work, "fujid")
        self.procs = {}
        self.cli_env = None
        self.admin_token = None

    # -- the network ------------------------------------------------------------------------
    def net_up(self):
        sh("ip", "link", "add", self.bridge, "type", "bridge")
        sh("ip", "addr", "add", f"{BRIDGE_IP}/24", "dev", self.bridge)
        sh("ip", "link", "set", self.bridge, "up")
        ips = {"fujid": FUJID_IP, "node-a": NODES["node-a"][0], "node-b": NODES["node-b"][0]}
        for who, ns in self.ns.items():
            sh("ip", "netns", "add", ns)
            outer, inner = self.veth[who], self.veth[who] + "i"
            sh("ip", "link", "add", outer, "type", "veth", "peer", "name", inner)
            sh("ip", "link", "set", inner, "netns", ns)
            sh("ip", "link", "set", outer, "master", self.bridge)
            sh("ip", "link", "set", outer, "up")
            sh("ip", "netns", "exec", ns, "ip", "addr", "add", f"{ips[who]}/24", "dev", inner)
            sh("ip", "netns", "exec", ns, "ip", "link", "set", inner, "up")
            sh("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")

    def net_down(self):
        for who, ns in self.ns.items():
            sh("ip", "link", "del", self.veth[who], check=False)
            sh("ip", "netns", "del", ns, check=False)
        sh("ip", "link", "del", self.bridge, check=False)

    def link(self, who, up):
        sh("ip", "link", "set", self.veth[who], "up" if up else "down")

    # -- processes --------------------------------------------------------------------------
    def env(self, extra=None):
        env = {k: v for k, v in os.environ.items() if not k.startswith("FUJI_")}
        env["OMP_WAIT_POLICY"] = "PASSIVE"
        env.update(extra or {})
        return env

    def spawn(self, name, argv):
        out = open(os.path.join(self.work, f"{name}.log"), "ab")
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=self.env(),
                             start_new_session=True)
        out.close()
        self.procs[name] = p
        return p

    def logtext(self, name):
        try:
            return open(os.path.join(self.work, f"{name}.log"), errors="replace").read()
        except OSError:
            return ""

    def kill(self, name, sig=signal.SIGKILL):
        p = self.procs.get(name)
        if p is None or p.poll() is not None:
            return
        try:
            os.killpg(p.pid, sig)
        except ProcessLookupError:
            pass
        try:
            p.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()

    def fuji(self, args, token=None, timeout=60):
        env = dict(self.cli_env)
        if token:
            env["FUJI_TOKEN"] = token
        try:
            return subprocess.run([os.path.join(self.bin, "fuji")] + args, env=env, capture_output=True,
                                  text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            return subprocess.CompletedProcess(args, 124, "", "timed out")

    def fuji_json(self, args):
        r = self.fuji(args + ["--output", "json"])
        if r.returncode != 0:
            raise RuntimeError(f"fuji {' '.join(args)}: {r.stderr.strip()[:300]}")
        return json.loads(r.stdout)

    def start_fujid(self):
        self.spawn("fujid", ["ip", "netns", "exec", self.ns["fujid"], os.path.join(self.bin, "fujid"),
                             "--db", os.path.join(self.state, "fujid.db"), "--listen", f"{FUJID_IP}:{PORT}",
                             "--lease-ttl-ms", "3000", "--allow-read", self.data])
        for _ in range(300):
            if os.path.exists(os.path.join(self.state, "admin.token")):
                break
            time.sleep(0.1)
        self.admin_token = open(os.path.join(self.state, "admin.token")).read().strip()
        self.cli_env = self.env({"FUJI_SERVER": f"{FUJID_IP}:{PORT}", "FUJI_CA": os.path.join(self.state, "ca.crt")})
        for _ in range(100):
            r = self.fuji(["admin", "user", "add", "mn"], token=self.admin_token)
            if r.returncode == 0:
                self.cli_env["FUJI_TOKEN"] = r.stdout.strip()
                return
            time.sleep(0.2)
        raise RuntimeError("fuji admin user add: " + r.stderr.strip() + self.logtext("fujid")[-1500:])

    def start_agent(self, name):
        addr, devices = NODES[name]
        state = os.path.join(self.work, f"agent-{name}")
        argv = [os.path.join(self.bin, "fuji-agent"), "--server", f"{FUJID_IP}:{PORT}", "--devices",
                f"cpu:{devices}", "--sample-interval-ms", "500", "--worker-id", name, "--state-dir", state,
                "--ca", os.path.join(self.state, "ca.crt"), "--allow-read", self.data, "--allow-write", self.data,
                "--allow-write", self.private, "--advertise-addr", addr, "--keep-warm", "0"]
        if not os.path.exists(os.path.join(state, "credential.json")):
            r = self.fuji(["admin", "agent-token", "--expires", "10m"], token=self.admin_token)
            if r.returncode != 0:
                raise RuntimeError("fuji admin agent-token: " + r.stderr.strip())
            argv += ["--join-token", r.stdout.strip()]
        # Its own mount namespace with a private tmpfs at self.private: a directory each node has
        # but that nodes do not share.
        script = (f"mount -t tmpfs -o size=64m,mode=1777 tmpfs {self.private} && exec "
                  + " ".join(subprocess.list2cmdline([a]) for a in argv))
        self.spawn(f"agent-{name}", ["ip", "netns", "exec", self.ns[name], "unshare", "-m", "--propagation",
                                     "private", "sh", "-c", script])

    def wait_agents(self, names, within=120):
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            r = self.fuji(["workers", "--output", "json"])
            if r.returncode == 0:
                workers = {w["id"]: w for w in json.loads(r.stdout).get("workers", [])}
                if all(workers.get(n, {}).get("state") == "ONLINE" for n in names) and all(
                        "calibrat" in self.logtext(f"agent-{n}") for n in names):
                    return
            time.sleep(0.5)
        raise RuntimeError("agents did not come online: " + " | ".join(self.logtext(f"agent-{n}")[-800:] for n in names))

    def setup(self):
        if os.path.exists(self.work):
            shutil.rmtree(self.work)
        os.makedirs(self.work, mode=0o755)
        os.chmod(self.work, 0o755)
        os.makedirs(self.state, mode=0o700)
        os.makedirs(self.data, mode=0o755)
        os.makedirs(self.private, mode=0o755)
        r = sh(os.path.join(self.bin, "fuji"), "model", "init", "--arch", "tiny", "--out",
               os.path.join(self.data, "tiny"), "--seed", "3")
        repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        sh("sh", os.path.join(repo, "tests", "reference", "make_corpora.sh"), os.path.join(self.data, "text"))
        sh("chown", "-R", "fuji:fuji", self.data)
        self.net_up()
        self.start_fujid()
        for name in NODES:
            self.start_agent(name)
        self.wait_agents(list(NODES))

    def teardown(self):
        for name in list(self.procs):
            if name.startswith("agent-"):
                self.kill(name, signal.SIGTERM)
        self.kill("fujid", signal.SIGTERM)
        self.net_down()

    # -- jobs -------------------------------------------------------------------------------
    def finetune(self, save_to, nodes, steps=6, save_every=2, extra=()):
        args = ["submit", "finetune", "--model", os.path.join(self.data, "tiny"), "--data",
                os.path.join(self.data, "text", "english.txt"), "--ranks", "4", "--nodes", str(nodes), "--zero", "3",
                "--seq-len", "32", "--micro-batch", "2", "--steps", str(steps), "--lr", "1e-3", "--threads", "1",
                "--save-to", save_to, "--save-every", str(save_every), "--cache-dir", os.path.join(self.data, "cache"),
                "--collective-timeout-ms", str(self.args.collective_timeout_ms), *extra]
        return self.fuji(args + ["--output", "json"])

    def wait_state(self, job, states, within):
        deadline = time.monotonic() + within
        shown = {}
        while time.monotonic() < deadline:
            r = self.fuji(["show", str(job), "--output", "json"])
            if r.returncode == 0:
                shown = json.loads(r.stdout)
                if shown.get("state") in states:
                    return shown
            time.sleep(0.3)
        return shown

    def describe(self, pids):
        out = []
        for pid in pids:
            try:
                status = dict(l.split(":\t", 1) for l in open(f"/proc/{pid}/status").read().splitlines() if ":\t" in l)
                wchan = open(f"/proc/{pid}/wchan").read().strip()
                cmd = open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ").decode(errors="replace")[:80]
                out.append(f"{pid} ({status.get('State', '?').strip()} in {wchan}, parent {status.get('PPid', '?').strip()}, "
                           f"ns {os.readlink(f'/proc/{pid}/ns/net')}, {cmd})")
            except OSError:
                out.append(f"{pid} (gone)")
        return "; ".join(out)

    def ranks_alive(self):
        """pids of the fuji-rank processes in the nodes' network namespaces (the namespaces share
        the machine's pid namespace)."""
        ours = set()
        for who in ("node-a", "node-b"):
            try:
                ours.add(f"net:[{os.stat(f'/run/netns/{self.ns[who]}').st_ino}]")
            except OSError:
                pass
        out = []
        for name in os.listdir("/proc"):
            if name.isdigit():
                try:
                    exe = os.readlink(f"/proc/{name}/exe")
                    net = os.readlink(f"/proc/{name}/ns/net")
                except OSError:
                    continue
                if exe.endswith("/fuji-rank") and net in ours:
                    out.append(int(name))
        return out

    def losses(self, job):
        got = self.fuji_json(["losses", str(job)])
        out = {("train", p["step"]): p["loss"] for p in got.get("losses", [])}
        out.update({("eval", p["step"]): p["loss"] for p in got.get("eval_losses", [])})
        return out


# ---------------------------------------------------------------------------------------------
# Scenarios: each returns a list of failures (strings).
# ---------------------------------------------------------------------------------------------
def scenario_split(c):
    fails = []
    jobs = {}
    for nodes in (2, 1):
        save_to = os.path.join(c.data, f"split-{nodes}")
        r = c.finetune(save_to, nodes)
        if r.returncode != 0:
            return [f"submit --nodes {nodes}: {r.stderr.strip()[:300]}"]
        jobs[nodes] = json.loads(r.stdout)["id"]
        shown = c.wait_state(jobs[nodes], ("SUCCEEDED", "FAILED", "CANCELLED"), 300)
        if shown.get("state") != "SUCCEEDED":
            return [f"--nodes {nodes}: job {jobs[nodes]} ended {shown.get('state')}: {shown.get('reason', '')[:300]}"]
        gang = shown.get("gang", [])
        log(f"--nodes {nodes}: job {jobs[nodes]} SUCCEEDED; gang {json.dumps(gang)}")
        if nodes == 2:
            ids = sorted(m.get("worker_id") for m in gang)
            if ids != ["node-a", "node-b"] or sorted(m.get("ranks") for m in gang) != [2, 2]:
                fails.append(f"--nodes 2: fuji show's gang is {gang}, not 2 + 2 on node-a and node-b")
            text = c.fuji(["show", str(jobs[nodes])]).stdout
            if "node-b" not in text or "ranks 2-3" not in text:
                fails.append("fuji show does not list node-b's ranks 2-3:\n" + text[:800])
            # Timings per global rank, memory samples per agent.
            ranks = {t["rank"] for t in c.fuji_json(["timings", str(jobs[nodes])]).get("timings", [])}
            got = c.fuji(["samples", str(jobs[nodes]), "--format", "json"])
            agents = {x["worker_id"] for x in json.loads(got.stdout or "{}").get("samples", [])}
            if ranks != {0, 1, 2, 3} or agents != {"node-a", "node-b"}:
                fails.append(f"timings name ranks {sorted(ranks)} and samples agents {sorted(agents)}")
        elif gang:
            fails.append(f"--nodes 1 ran as a gang across agents: {gang}")
    split, single = c.losses(jobs[2]), c.losses(jobs[1])
    if not split or split.keys() != single.keys():
        fails.append(f"loss steps differ: {sorted(split)} vs {sorted(single)}")
    for key in sorted(set(split) & set(single)):
        a, b = split[key], single[key]
        if abs(a - b) > 1e-5 * max(abs(b), 1e-12):
            fails.append(f"loss {key}: 2 + 2 gives {a!r}, one agent {b!r} (relative {abs(a - b) / abs(b):.2e})")
    log(f"losses: {len(split)} points agree" if not fails else "losses differ")
    # The final checkpoints: the same world size, so the same shards.
    def final(save_to):
        steps = sorted(d for d in os.listdir(save_to) if d.startswith("step-"))
        return os.path.join(save_to, steps[-1]) if steps else None
    fa, fb = final(os.path.join(c.data, "split-2")), final(os.path.join(c.data, "split-1"))
    if fa is None or fb is None:
        fails.append("no final checkpoint")
        return fails
    compared = 0
    for name in sorted(os.listdir(fb)):
        if not name.endswith(".safetensors"):
            continue
        if not os.path.exists(os.path.join(fa, name)):
            fails.append(f"{name} is missing from the 2 + 2 run's checkpoint")
            continue
        ta, tb = read_safetensors(os.path.join(fa, name)), read_safetensors(os.path.join(fb, name))
        for t in tb:
            va, vb = ta.get(t, (None, None, []))[2], tb[t][2]
            if len(va) != len(vb):
                fails.append(f"{name}:{t}: {len(va)} values vs {len(vb)}")
                continue
            worst = max((abs(x - y) / max(abs(y), 1e-3) for x, y in zip(va, vb)), default=0.0)
            compared += len(vb)
            if worst > 1e-4:
                fails.append(f"{name}:{t}: weights differ (worst relative {worst:.2e})")
    log(f"final weights: {compared} values compared")
    if compared == 0:
        fails.append("no weights compared")
    return fails


def scenario_not_shared(c):
    r = c.finetune(os.path.join(c.private, "ckpt"), 2, steps=2)
    if r.returncode != 0:
        return [f"submit: {r.stderr.strip()[:300]}"]
    job = json.loads(r.stdout)["id"]
    shown = c.wait_state(job, ("SUCCEEDED", "FAILED", "CANCELLED"), 240)
    reason = shown.get("reason", "")
    log(f"job {job} ended {shown.get('state')}: {reason[:300]}")
    fails = []
    if shown.get("state") != "FAILED":
        fails.append(f"a --save-to private to each node: job ended {shown.get('state')}, not FAILED")
    if "not shared" not in reason or "node-a" not in reason or "node-b" not in reason or "\n" in reason:
        fails.append(f"the reason is not one line naming both agents: {reason!r}")
    if shown.get("attempts", 0) != 0:
        fails.append(f"a bad --save-to was retried ({shown.get('attempts')} retries): it is the user's input")
    return fails


def wait_for_running_gang(c, job, within=120):
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        shown = c.wait_state(job, ("RUNNING",), 2)
        if shown.get("state") == "RUNNING" and shown.get("progress", {}).get("done", 0) >= 1:
            return shown
        if shown.get("state") in ("SUCCEEDED", "FAILED", "CANCELLED"):
            return shown
        time.sleep(0.2)
    return {}


def submit_long(c, name, save_every):
    """A 100-step 2 + 2 fine-tune that checkpoints every save_every steps: (job id, save_to) or an error."""
    save_to = os.path.join(c.data, name)
    r = c.finetune(save_to, 2, steps=100, save_every=save_every)
    if r.returncode != 0:
        return None, f"submit: {r.stderr.strip()[:300]}"
    return json.loads(r.stdout)["id"], save_to


def ranks_gone_within_bound(c, what):
    """Waits for every rank of both nodes to end after `what`: failures if they outlive the
    collective timeout, the lease and a grace."""
    t0 = time.monotonic()
    bound = c.args.collective_timeout_ms / 1000.0 + 3.0 + 10.0
    said = False
    while time.monotonic() - t0 < bound + 30 and c.ranks_alive():
        if not said and time.monotonic() - t0 > bound:
            log(f"past the bound: {c.describe(c.ranks_alive())}")
            said = True
        time.sleep(0.2)
    gone, left = time.monotonic() - t0, c.ranks_alive()
    log(f"every rank gone {gone:.1f} s after {what} (bound {bound:.1f} s)" if not left else f"ranks left: {left}")
    if left or gone > bound:
        return [f"ranks {c.describe(left)} still ran {gone:.1f} s after {what} (bound {bound:.1f} s)"]
    return []


def scenario_cut_link(c):
    job, save_to = submit_long(c, "cut", 20)
    if job is None:
        return [save_to]
    shown = wait_for_running_gang(c, job)
    if shown.get("state") != "RUNNING":
        return [f"job {job} never ran as a gang: {shown.get('state')} {shown.get('reason', '')[:200]}"]
    log(f"job {job} at step {shown.get('progress', {}).get('done')}: node-b's link goes down")
    c.link("node-b", False)
    # node-a's ranks see their peers vanish; node-b's see fujid and their peers vanish.
    fails = ranks_gone_within_bound(c, "the cut")
    c.link("node-b", True)
    shown = c.wait_state(job, ("SUCCEEDED", "FAILED", "CANCELLED"), 400)
    log(f"with the link back: job {job} {shown.get('state')} after {shown.get('attempts')} retries")
    if shown.get("state") != "SUCCEEDED":
        fails.append(f"job {job} ended {shown.get('state')}: {shown.get('reason', '')[:300]}")
    return fails


def scenario_kill_agent(c):
    job, save_to = submit_long(c, "kill", 10)
    if job is None:
        return [save_to]
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and not os.path.exists(os.path.join(save_to, "latest")):
        time.sleep(0.2)
    shown = c.wait_state(job, ("RUNNING",), 5)
    if shown.get("state") != "RUNNING" or not os.path.exists(os.path.join(save_to, "latest")):
        return [f"job {job} wrote no checkpoint while running: {shown.get('state')} {shown.get('reason', '')[:200]}"]
    log(f"job {job} checkpointed; kill -9 node-b's agent")
    c.kill("agent-node-b")
    fails = ranks_gone_within_bound(c, "node-b's agent died")
    time.sleep(2)
    shown = c.fuji_json(["show", str(job)])
    log(f"job {job} is {shown.get('state')}: {shown.get('reason', '')[:200]}")
    if shown.get("state") not in ("QUEUED", "RETRYING", "ASSIGNED", "RUNNING"):
        fails.append(f"job {job} is {shown.get('state')} with node-b gone, not waiting to be retried")
    c.start_agent("node-b")
    c.wait_agents(["node-b"])
    shown = c.wait_state(job, ("SUCCEEDED", "FAILED", "CANCELLED"), 400)
    log(f"job {job} {shown.get('state')} after {shown.get('attempts')} retries")
    if shown.get("state") != "SUCCEEDED":
        fails.append(f"job {job} ended {shown.get('state')}: {shown.get('reason', '')[:300]}")
    result = c.fuji_json(["result", str(job)])
    start = result.get("result", result).get("start_step", 0)
    log(f"the last attempt started after step {start}")
    if not start:
        fails.append(f"the retry did not resume from a checkpoint (start_step {start})")
    return fails


def iface_bytes(c, who):
    """(rx, tx) bytes of the agent's interface inside its namespace."""
    r = sh("ip", "netns", "exec", c.ns[who], "cat", "/proc/net/dev")
    for line in r.stdout.splitlines():
        name, _, rest = line.partition(":")
        if name.strip() == c.veth[who] + "i":
            f = rest.split()
            return int(f[0]), int(f[8])
    return 0, 0


def step_ms(c, job, steps):
    """The train phase's time per step (the steps, no load, no eval), median over the ranks."""
    got = c.fuji_json(["timings", str(job)])
    per_rank = sorted(t["ms"] / steps for t in got.get("timings", []) if t["phase"] == "train")
    return (per_rank[len(per_rank) // 2] if per_rank else 0.0), len(per_rank)


def scenario_bench(c):
    """Side by side, c.args.rounds rounds: the 2 + 2 fine-tune across namespaces and the same 4 ranks
    on node-a alone; step time and the bytes node-b's ranks sent, against ZeRO-3's arithmetic."""
    rows = []
    params = 0
    for name in os.listdir(os.path.join(c.data, "tiny")):
        if name.endswith(".safetensors"):
            with open(os.path.join(c.data, "tiny", name), "rb") as f:
                header = json.loads(f.read(struct.unpack("<Q", f.read(8))[0]))
            for t, meta in header.items():
                if t != "__metadata__":
                    n = 1
                    for d in meta["shape"]:
                        n *= d
                    params += n
    for rnd in range(c.args.rounds):
        for nodes in (2, 1):
            save_to = os.path.join(c.data, f"bench-{rnd}-{nodes}")
            before = iface_bytes(c, "node-b")
            r = c.finetune(save_to, nodes, steps=c.args.bench_steps, save_every=c.args.bench_steps)
            if r.returncode != 0:
                return [f"submit: {r.stderr.strip()[:300]}"]
            job = json.loads(r.stdout)["id"]
            shown = c.wait_state(job, ("SUCCEEDED", "FAILED", "CANCELLED"), 600)
            if shown.get("state") != "SUCCEEDED":
                return [f"bench job {job} ended {shown.get('state')}: {shown.get('reason', '')[:300]}"]
            after = iface_bytes(c, "node-b")
            ms, n = step_ms(c, job, c.args.bench_steps)
            rows.append((rnd, nodes, ms, n, after[1] - before[1]))
            log(f"round {rnd} --nodes {nodes}: step {ms:.1f} ms (median of {n} ranks), node-b sent {after[1] - before[1]} bytes")
    print("\n| round | placement | ms per step (median of the ranks) | node-b's interface: bytes sent per rank over the job / steps |")
    print("|---|---|---|---|")
    for rnd, nodes, ms, n, sent in rows:
        if nodes == 2:
            print(f"| {rnd} | 2 + 2 across namespaces | {ms:.1f} | {sent / 2 / c.args.bench_steps / 1e6:.2f} MB |")
        else:
            print(f"| {rnd} | 4 on node-a | {ms:.1f} | - |")
    ratios = [a[2] / b[2] for a, b in zip(rows[0::2], rows[1::2]) if b[2] > 0]
    print(f"\nstep time 2 + 2 / one agent: {', '.join(f'{x:.2f}' for x in ratios)}")
    if params:
        # ZeRO-3 per rank per step: all-gather of the parameters in forward and backward and a
        # reduce-scatter of the gradients, each (N - 1) / N of the fp32 bytes.
        zero = 3 * 4 * params * 3 / 4
        print(f"ZeRO-3 arithmetic, per rank per step (N = 4, fp32, {params} parameters): {zero / 1e6:.2f} MB sent")
    return []


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", required=True)
    ap.add_argument("--work-dir", default=f"/tmp/fuji-multinode-{os.getpid()}")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--only", default=",".join(SCENARIOS))
    ap.add_argument("--collective-timeout-ms", type=int, default=10000)
    ap.add_argument("--rounds", type=int, default=3, help="bench: rounds of the side-by-side pair")
    ap.add_argument("--bench-steps", type=int, default=12, help="bench: steps per job")
    args = ap.parse_args()
    if os.geteuid() != 0 or shutil.which("ip") is None or shutil.which("unshare") is None:
        print("multinode: needs root, ip and unshare; skipped")
        return 77
    if subprocess.run(["id", "fuji"], capture_output=True).returncode != 0:
        print("multinode: needs the user fuji; skipped")
        return 77
    for b in ("fuji", "fujid", "fuji-agent", "fuji-rank"):
        if not os.access(os.path.join(args.bin, b), os.X_OK):
            print(f"multinode: {b} is not built; skipped")
            return 77
    c = Cluster(args)
    failed = []
    try:
        c.setup()
        for name in args.only.split(","):
            log(f"== {name}")
            try:
                fails = globals()[f"scenario_{name}"](c)
            except Exception as e:  # a scenario that breaks fails, the others still run
                fails = [f"{type(e).__name__}: {e}"]
            for f in fails:
                log(f"FAIL {name}: {f}")
            log(f"{'PASS' if not fails else 'FAIL'} {name}")
            failed += [name] if fails else []
    finally:
        c.teardown()
        if failed:
            for name in ["fujid", "agent-node-a", "agent-node-b"]:
                log(f"--- {name}.log (tail)\n{c.logtext(name)[-3000:]}")
    if not failed and not args.keep:
        shutil.rmtree(c.work, ignore_errors=True)
    log("all scenarios held" if not failed else f"failed: {', '.join(failed)}; work directory kept: {c.work}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
