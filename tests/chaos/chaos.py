#!/usr/bin/env python3
"""fuji's chaos test: real fujid, two fuji-agents and their fuji-rank gangs under a random schedule
of faults while jobs flow, then a check of the invariants fuji promises.

Usage (as root, after `scripts/build fuji fujid fuji-agent fuji-rank`):

    tests/chaos/chaos.py --seed S --schedules N --faults-per-schedule K [--keep]

Each schedule is a fresh cluster in its own directory: fujid with its database, CA and admin token on
a small tmpfs (so that the disk can fill), two agents with two CPU devices each (fake nodes), each
talking to fujid through its own TCP proxy that the test controls. Jobs flow throughout: inference
of a tiny random model (`fuji model init --arch tiny`) and 2-rank fine-tunes of it that save
checkpoints (--save-to, resumed by their retries). A seeded RNG (seed S + schedule index) picks K
faults, one after another with random gaps and durations:

  kill_fujid     kill -9 of fujid, restarted on the same database after a pause
  kill_agent     kill -9 of an agent, restarted with its state directory after a pause
  kill_rank      kill -9 of one running fuji-rank
  partition      the agent's proxy black-holes (holds every byte) or resets every connection
  disk_full      a ballast file fills fujid's tmpfs, removed after a while
  cancel         `fuji cancel` of a running job
  clock_jump     fujid's wall clock jumps minutes forward or back (libfaketime, monotonic clock
                 untouched); left out when libfaketime is not installed (scripts/bootstrap has it)

Then the faults stop, everything is healed and running, the test waits (bounded) for every job to
end, stops the cluster and checks, printing each as PASS or FAIL with its evidence:

  acknowledged   every job whose id the CLI printed exists in fujid (CLI and database)
  single_attempt no job ever had two attempts' ranks alive at once (ground truth: /proc sampled
                 every 100 ms, across both agents)
  terminal       every job ends in exactly one terminal state: `fuji show`, jobs.state and the last
                 of its job_events agree, and exactly one event enters a terminal state
  cancel         no rank of a cancelled job started after the cancel was acknowledged, and its
                 ranks were gone within the lease TTL plus the agent's stop grace of the ack
  checkpoint     every file of a checkpoint directory was written while one attempt of its job
                 ran (and, where step directories name their attempt, one attempt per directory)
  integrity      PRAGMA integrity_check of the database after fujid stopped is "ok"
  no_leftovers   no fujid, fuji-agent or fuji-rank of the run is alive after teardown

How ranks are known: the agent starts fuji-rank through $FUJI_RANK, here a small shim that reads
the request line the agent writes to the rank's stdin, puts the job id and the gang's rendezvous
into the environment (FUJI_CHAOS_JOB, FUJI_CHAOS_GANG) and execs the real fuji-rank with the same
line on its stdin. A rank of an agent's warm pool serves requests of many jobs and is tagged "warm":
kill_rank may pick it, the per-job invariants do not count it. A process of the run carries
FUJI_CHAOS_RUN=<run id> in its environment.

Exit status: 0 when every invariant of every schedule held, 1 when one failed, 77 when the test
cannot run here (not root, or binaries missing). The work directory (default
/tmp/fuji-chaos-<pid>) is removed unless --keep is given or an invariant failed.
"""

import argparse
import errno
import json
import os
import random
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import traceback
import uuid

TERMINAL = ("SUCCEEDED", "FAILED", "CANCELLED")
FAULTS = ("kill_fujid", "kill_agent", "kill_rank", "partition", "disk_full", "cancel", "clock_jump")
FAKETIME_LIBS = ("/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1",
                 "/usr/lib/aarch64-linux-gnu/faketime/libfaketimeMT.so.1")
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def now():
    return time.monotonic()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------------------------
# The proxy between an agent and fujid: byte-level (TLS is end to end), in one of three modes.
# ---------------------------------------------------------------------------------------------
class Proxy:
    """Listens on 127.0.0.1:port and forwards each connection to fujid's port. Modes: "pass";
    "blackhole" (nothing is read or forwarded: the bytes wait in the kernel's buffers and the
    senders stall); "reset" (every connection is closed with RST, new ones too)."""

    def __init__(self, target_port):
        self.target_port = target_port
        self.mode = "pass"
        self.lock = threading.Lock()
        self.conns = set()
        self.stopped = False
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    @staticmethod
    def _rst(s):
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        except OSError:
            pass
        try:
            s.close()
        except OSError:
            pass

    def set_mode(self, mode):
        with self.lock:
            self.mode = mode
            conns = list(self.conns) if mode == "reset" else []
            if mode == "reset":
                self.conns.clear()
        for pair in conns:
            for s in pair:
                self._rst(s)

    def _accept(self):
        while not self.stopped:
            try:
                client, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            if self.mode == "reset":
                self._rst(client)
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=2)
            except OSError:
                self._rst(client)
                continue
            pair = (client, upstream)
            with self.lock:
                self.conns.add(pair)
            threading.Thread(target=self._pump, args=(pair,), daemon=True).start()

    def _pump(self, pair):
        import select
        client, upstream = pair
        peer = {client: upstream, upstream: client}
        try:
            while not self.stopped:
                with self.lock:
                    if pair not in self.conns:
                        return
                    mode = self.mode
                if mode == "blackhole":
                    time.sleep(0.05)
                    continue
                readable, _, _ = select.select([client, upstream], [], [], 0.1)
                for s in readable:
                    data = s.recv(65536)
                    if not data:
                        raise OSError("closed")
                    peer[s].sendall(data)
        except OSError:
            pass
        with self.lock:
            self.conns.discard(pair)
        for s in pair:
            try:
                s.close()
            except OSError:
                pass

    def stop(self):
        self.stopped = True
        self.set_mode("reset")
        try:
            self.sock.close()
        except OSError:
            pass


# ---------------------------------------------------------------------------------------------
# /proc: the ranks of the run (ground truth for attempts) and every process of the run.
# ---------------------------------------------------------------------------------------------
def read_proc(pid, name):
    try:
        with open(f"/proc/{pid}/{name}", "rb") as f:
            return f.read()
    except OSError:
        return None


def proc_state(pid):
    stat = read_proc(pid, "stat")
    if not stat:
        return None, None
    close = stat.rfind(b")")
    fields = stat[close + 2:].split()
    return fields[0].decode(), int(fields[1])


def environ_of(pid):
    raw = read_proc(pid, "environ")
    if raw is None:
        return {}
    env = {}
    for kv in raw.split(b"\0"):
        k, sep, v = kv.partition(b"=")
        if sep:
            env[k.decode(errors="replace")] = v.decode(errors="replace")
    return env


def run_processes(run_id):
    """Live processes (not zombies) whose environment carries FUJI_CHAOS_RUN=run_id:
    [(pid, argv0, env)]."""
    out = []
    me = os.getpid()
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        pid = int(name)
        env = environ_of(pid)
        if env.get("FUJI_CHAOS_RUN") != run_id:
            continue
        state, _ = proc_state(pid)
        if state is None or state == "Z":
            continue
        cmdline = read_proc(pid, "cmdline") or b""
        out.append((pid, cmdline.split(b"\0")[0].decode(errors="replace"), env))
    return out


class Sampler:
    """Every ~100 ms: the fuji-rank processes of the run, by job and attempt instance (a gang's
    rendezvous, or the pid of a lone rank). Keeps every sample in which a job had ranks of two
    instances alive, and each instance's first and last sighting."""

    def __init__(self, run_id, interval=0.1):
        self.run_id = run_id
        self.interval = interval
        self.lock = threading.Lock()
        self.instances = {}   # (job, instance) -> dict(first, last, first_wall, last_wall, pids, ppids)
        self.overlaps = []    # (mono, wall, job, [instances])
        self.samples = []     # (mono, wall, {job: set(instances)}) -- for checkpoint timing
        self.live_ranks = []  # the last sample's [(pid, job)]
        self.stopped = False
        self.count = 0
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self):
        while not self.stopped:
            self.sample()
            time.sleep(self.interval)

    def sample(self):
        t, wall = now(), time.time()
        by_job = {}
        live = []
        for pid, argv0, env in run_processes(self.run_id):
            if not (argv0 == "fuji-rank" or argv0.endswith("/fuji-rank")):
                continue
            job = env.get("FUJI_CHAOS_JOB", "")
            if not job:
                continue  # the agent's calibration rank
            gang = env.get("FUJI_CHAOS_GANG", "")
            instance = gang if gang else f"pid:{pid}"
            _, ppid = proc_state(pid)
            by_job.setdefault(job, set()).add(instance)
            live.append((pid, job))
            with self.lock:
                rec = self.instances.setdefault((job, instance), {
                    "first": t, "first_wall": wall, "pids": set(), "ppids": set()})
                rec["last"], rec["last_wall"] = t, wall
                rec["pids"].add(pid)
                if ppid is not None:
                    rec["ppids"].add(ppid)
        with self.lock:
            self.count += 1
            self.live_ranks = live
            self.samples.append((t, wall, {j: frozenset(s) for j, s in by_job.items()}))
            for job, inst in by_job.items():
                if len(inst) > 1 and job != WARM:
                    self.overlaps.append((t, wall, job, sorted(inst)))

    def running_jobs(self):
        with self.lock:
            return sorted({job for _, job in self.live_ranks})

    def live(self):
        with self.lock:
            return list(self.live_ranks)

    def wait_live(self, seconds):
        """The live ranks, waiting up to `seconds` for one to run."""
        deadline = now() + seconds
        while not self.live() and now() < deadline:
            time.sleep(self.interval)
        return self.live()

    def stop(self):
        self.stopped = True
        self.thread.join()


# ---------------------------------------------------------------------------------------------
# One schedule: a cluster, jobs, faults, and the invariants.
# ---------------------------------------------------------------------------------------------
class Cluster:
    def __init__(self, args, work, run_id, rng, faketime_lib):
        self.args = args
        self.bin = args.bin
        self.work = work
        self.run_id = run_id
        self.rng = rng
        self.faketime_lib = faketime_lib
        self.state = os.path.join(work, "fujid")     # the tmpfs
        self.db = os.path.join(self.state, "fujid.db")
        self.data = os.path.join(work, "data")       # read and written by ranks (user fuji)
        self.clock_file = os.path.join(work, "faketime")
        self.port = free_port()
        self.fujid = None
        self.agents = {}      # id -> Popen or None
        self.proxies = {}
        self.mounted = False
        self.cli_env = None
        self.admin_token = None
        self.events = []      # (mono, wall, text) of what the test did
        self.outages = []     # (start mono, end mono, what)
        self.acked = {}       # job id -> dict(kind, save_to, at)
        self.cancel_acks = {}  # job id -> mono time of the ack
        self.submit_failures = 0
        self.faults_run = []
        self.logs = []

    # -- processes ------------------------------------------------------------------------
    def note(self, text):
        self.events.append((now(), time.time(), text))
        log(text)

    def _env(self, extra=None):
        env = dict(os.environ)
        for k in list(env):
            if k.startswith("FUJI_") or k in ("LD_PRELOAD",) or k.startswith("FAKETIME"):
                del env[k]
        env["FUJI_CHAOS_RUN"] = self.run_id
        env["OMP_WAIT_POLICY"] = "PASSIVE"
        if extra:
            env.update(extra)
        return env

    def _spawn(self, argv, logname, env):
        path = os.path.join(self.work, logname)
        out = open(path, "ab")
        self.logs.append(path)
        # Its own process group; killed with the driver if the driver dies first.
        p = subprocess.Popen(["setpriv", "--pdeathsig", "KILL", "--"] + argv, stdin=subprocess.DEVNULL,
                             stdout=out, stderr=out, env=env, start_new_session=True)
        out.close()
        return p

    def start_fujid(self):
        env = self._env()
        if self.faketime_lib:
            env.update({"LD_PRELOAD": self.faketime_lib, "FAKETIME_TIMESTAMP_FILE": self.clock_file,
                        "FAKETIME_NO_CACHE": "1", "FAKETIME_DONT_FAKE_MONOTONIC": "1"})
        self.fujid = self._spawn([os.path.join(self.bin, "fujid"), "--db", self.db, "--listen",
                                  f"127.0.0.1:{self.port}", "--lease-ttl-ms", str(self.args.lease_ttl_ms),
                                  "--max-poll-wait-ms", "2000", "--allow-read", self.data],
                                 "fujid.log", env)
        deadline = now() + 30
        while now() < deadline:
            if self.fujid.poll() is not None:
                break
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return True
            except OSError:
                time.sleep(0.1)
        self.note(f"fujid did not come up (exit {self.fujid.poll()})")
        return False

    def start_agent(self, name):
        state = os.path.join(self.work, f"agent-{name}")
        port = self.port if self.args.no_proxy else self.proxies[name].port
        argv = [os.path.join(self.bin, "fuji-agent"), "--server", f"127.0.0.1:{port}",
                "--devices", "cpu:2", "--sample-interval-ms", "500", "--worker-id", name,
                "--state-dir", state, "--ca", os.path.join(self.state, "ca.crt"),
                "--allow-read", self.data, "--allow-write", self.data]
        if not os.path.exists(os.path.join(state, "credential.json")):
            r = self.fuji(["admin", "agent-token", "--expires", "10m"], token=self.admin_token)
            if r.returncode != 0:
                raise RuntimeError("fuji admin agent-token: " + r.stderr.strip())
            argv += ["--join-token", r.stdout.strip()]
        env = self._env({"FUJI_RANK": os.path.join(self.work, "rank-shim")})
        self.agents[name] = self._spawn(argv, f"agent-{name}.log", env)

    def fuji(self, args, token=None, timeout=30):
        env = dict(self.cli_env)
        if token:
            env["FUJI_TOKEN"] = token
        try:
            return subprocess.run([os.path.join(self.bin, "fuji")] + args, env=env, capture_output=True,
                                  text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            return subprocess.CompletedProcess(args, 124, "", "timed out")

    def kill9(self, p):
        if p is None or p.poll() is not None:
            return
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        p.wait()

    def terminate(self, p, grace=15):
        if p is None or p.poll() is not None:
            return
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            p.wait(grace)
        except subprocess.TimeoutExpired:
            self.note(f"pid {p.pid} ignored SIGTERM for {grace} s: SIGKILL")
            self.kill9(p)

    # -- setup ------------------------------------------------------------------------------
    def setup(self):
        os.makedirs(self.work, mode=0o755)
        os.chmod(self.work, 0o755)
        os.makedirs(self.state, mode=0o700)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={self.args.tmpfs_mib}m,mode=0700", "tmpfs",
                        self.state], check=True)
        self.mounted = True
        os.makedirs(self.data, mode=0o755)
        with open(self.clock_file, "w") as f:
            f.write("+0\n")
        with open(os.path.join(self.work, "rank-shim"), "w") as f:
            f.write(RANK_SHIM.replace("@FUJI_RANK@", os.path.join(self.bin, "fuji-rank")))
        os.chmod(os.path.join(self.work, "rank-shim"), 0o755)
        # The model and text every schedule uses, made once per run and copied in.
        shutil.copytree(self.args.assets, self.data, dirs_exist_ok=True)
        subprocess.run(["chown", "-R", "fuji:fuji", self.data], check=True)

        if not self.start_fujid():
            raise RuntimeError("fujid did not start: " + open(os.path.join(self.work, "fujid.log")).read()[-2000:])
        for _ in range(100):
            if os.path.exists(os.path.join(self.state, "admin.token")):
                break
            time.sleep(0.05)
        self.admin_token = open(os.path.join(self.state, "admin.token")).read().strip()
        self.cli_env = self._env({"FUJI_SERVER": f"127.0.0.1:{self.port}",
                                  "FUJI_CA": os.path.join(self.state, "ca.crt")})
        r = self.fuji(["admin", "user", "add", "chaos"], token=self.admin_token)
        if r.returncode != 0:
            raise RuntimeError("fuji admin user add: " + r.stderr.strip())
        self.cli_env["FUJI_TOKEN"] = r.stdout.strip()
        for name in ("node-a", "node-b"):
            self.proxies[name] = Proxy(self.port)
            self.start_agent(name)
        # Both agents registered and calibrated (they take work from then on) before the schedule.
        deadline = now() + 120
        while now() < deadline:
            r = self.fuji(["workers", "--output", "json"])
            calibrated = all("calibrat" in open(os.path.join(self.work, f"agent-{n}.log"), errors="replace").read()
                             for n in self.agents)
            if r.returncode == 0 and "node-a" in r.stdout and "node-b" in r.stdout and calibrated:
                return
            time.sleep(0.5)
        raise RuntimeError("the agents did not register and calibrate within 120 s: " + r.stdout + r.stderr)

    # -- jobs -------------------------------------------------------------------------------
    def submit(self, kind):
        model = os.path.join(self.data, "tiny")
        if kind == "infer":
            args = ["submit", "infer", "--model", model, "--prompt", "chaos " * self.rng.randint(1, 8),
                    "--max-new-tokens", str(self.args.infer_tokens), "--ignore-eos", "--output", "json"]
            save_to = None
        else:
            n = len([j for j in self.acked.values() if j["kind"] == "finetune"]) + self.submit_failures
            save_to = os.path.join(self.data, f"ckpt-{n}-{self.rng.randrange(1 << 30)}")
            args = ["submit", "finetune", "--model", model, "--data", os.path.join(self.data, "english.txt"),
                    "--ranks", "2", "--seq-len", "32", "--micro-batch", "2", "--steps", str(self.args.finetune_steps),
                    "--save-every", "2", "--lr", "1e-3", "--threads", "1", "--save-to", save_to,
                    "--cache-dir", os.path.join(self.data, "cache"), "--output", "json"]
        r = self.fuji(args)
        try:
            job_id = int(json.loads(r.stdout)["id"]) if r.returncode == 0 else None
        except (ValueError, KeyError, TypeError):
            job_id = None
        if job_id is None:
            self.submit_failures += 1
            self.note(f"submit {kind}: not acknowledged (exit {r.returncode}: {r.stderr.strip()[:160]})")
            return
        self.acked[str(job_id)] = {"kind": kind, "save_to": save_to, "at": now()}
        self.note(f"submit {kind}: job {job_id}")

    # -- faults -----------------------------------------------------------------------------
    def fault(self, kind, sampler):
        rng = self.rng
        t0 = now()
        if kind == "kill_fujid":
            pause = rng.uniform(0.5, 3.0)
            self.note(f"FAULT kill -9 fujid (pid {self.fujid.pid}); restart in {pause:.1f} s")
            self.kill9(self.fujid)
            time.sleep(pause)
            ok = self.start_fujid()
            self.outages.append((t0, now(), "fujid down"))
            self.note("fujid restarted" if ok else "fujid did not restart")
        elif kind == "kill_agent":
            name = rng.choice(sorted(self.agents))
            pause = rng.uniform(0.5, 3.0)
            self.note(f"FAULT kill -9 agent {name} (pid {self.agents[name].pid}); restart in {pause:.1f} s")
            self.kill9(self.agents[name])
            time.sleep(pause)
            self.start_agent(name)
            self.outages.append((t0, now(), f"agent {name} down"))
        elif kind == "kill_rank":
            live = sampler.wait_live(5.0)
            if not live:
                self.note("FAULT kill -9 of a rank: no rank runs; skipped")
                return False
            pid, job = rng.choice(sorted(live))
            self.note(f"FAULT kill -9 fuji-rank pid {pid} of job {job}")
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        elif kind == "partition":
            name = rng.choice(sorted(self.proxies))
            mode = rng.choice(["blackhole", "reset"])
            hold = rng.uniform(1.0, 2.5) * self.args.lease_ttl_ms / 1000.0
            self.note(f"FAULT partition {name} <-> fujid: {mode} for {hold:.1f} s")
            self.proxies[name].set_mode(mode)
            time.sleep(hold)
            self.proxies[name].set_mode("pass")
            self.outages.append((t0, now(), f"partition {name}"))
            self.note(f"partition {name} healed")
        elif kind == "disk_full":
            hold = rng.uniform(2.0, 6.0)
            self.note(f"FAULT disk full under fujid's database for {hold:.1f} s")
            self.fill_disk()
            # A submit while the disk is full: acknowledged only if it is on disk.
            self.submit("infer")
            time.sleep(hold)
            os.unlink(os.path.join(self.state, "chaos-ballast"))
            self.note("disk has room again")
        elif kind == "cancel":
            sampler.wait_live(5.0)
            running = [j for j in sampler.running_jobs() if j in self.acked and j not in self.cancel_acks]
            if not running:
                self.note("FAULT cancel: no job of the run has ranks alive; skipped")
                return False
            job = rng.choice(running)
            r = self.fuji(["cancel", job])
            if r.returncode == 0:
                self.cancel_acks[job] = now()
                self.note(f"FAULT cancel job {job}: acknowledged")
            else:
                self.note(f"FAULT cancel job {job}: refused (exit {r.returncode}: {r.stderr.strip()[:160]})")
        elif kind == "clock_jump":
            offset = rng.choice([-1, 1]) * rng.randint(2, 10) * 60
            self.note(f"FAULT fujid's wall clock jumps to {offset:+d} s")
            self.set_clock(offset)
        self.faults_run.append(kind)
        return True

    def set_clock(self, offset):
        tmp = self.clock_file + ".tmp"
        with open(tmp, "w") as f:
            f.write(f"{offset:+d}\n")
        os.replace(tmp, self.clock_file)

    def fill_disk(self):
        path = os.path.join(self.state, "chaos-ballast")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            for chunk in (1 << 20, 4096):
                block = b"\0" * chunk
                while True:
                    try:
                        os.write(fd, block)
                    except OSError as e:
                        if e.errno != errno.ENOSPC:
                            raise
                        break
        finally:
            os.close(fd)

    def heal(self):
        for p in self.proxies.values():
            p.set_mode("pass")
        ballast = os.path.join(self.state, "chaos-ballast")
        if os.path.exists(ballast):
            os.unlink(ballast)
        if self.faketime_lib:
            self.set_clock(0)
        if self.fujid.poll() is not None:
            self.note(f"fujid had exited ({self.fujid.returncode}): restarting it")
            self.start_fujid()
        for name, p in self.agents.items():
            if p.poll() is not None:
                self.note(f"agent {name} had exited ({p.returncode}): restarting it")
                self.start_agent(name)

    # -- waiting ----------------------------------------------------------------------------
    def show(self, job):
        r = self.fuji(["show", job, "--output", "json"])
        if r.returncode != 0:
            return None
        try:
            return json.loads(r.stdout)
        except ValueError:
            return None

    def wait_terminal(self, budget):
        deadline = now() + budget
        pending = set(self.acked)
        while pending and now() < deadline:
            for job in sorted(pending):
                j = self.show(job)
                if j and j.get("state") in TERMINAL:
                    pending.discard(job)
            if pending:
                time.sleep(1.0)
        return pending

    def diagnose(self):
        """What the agents and fujid say when jobs do not end: the workers' states, each log's tail."""
        r = self.fuji(["workers", "--output", "json"])
        try:
            states = {w.get("id", w.get("worker_id")): w.get("state") for w in json.loads(r.stdout)["workers"]}
        except (ValueError, KeyError, TypeError):
            states = (r.stdout + r.stderr).strip()[:300]
        self.note(f"fuji workers: {states}")
        for path in self.logs and sorted(set(self.logs)):
            with open(path, errors="replace") as f:
                tail = [line.rstrip()[:200] for line in f.readlines()[-3:]]
            self.note(f"{os.path.basename(path)} ends: " + " | ".join(tail))

    def teardown(self):
        for name, p in self.agents.items():
            self.terminate(p)
        self.terminate(self.fujid)
        for p in self.proxies.values():
            p.stop()


# The tag of the warm pool's ranks: each serves requests of many jobs, one attempt of none.
WARM = "warm"

RANK_SHIM = r"""#!/bin/bash
# The chaos test's way to know a rank's job: the request line the agent writes to fuji-rank's
# stdin names the job ("id") and, for a gang, its rendezvous; they go into the environment, and
# the real fuji-rank runs with the same line on its stdin. A rank of the agent's warm pool (no
# rendezvous) serves request after request of many jobs: it is tagged "warm" and reads the rest
# of the agent's pipe after the first line.
IFS= read -r line
if [[ $line =~ \"rendezvous\":\"([^\"]+)\" ]]; then
  export FUJI_CHAOS_GANG=${BASH_REMATCH[1]}
  [[ $line =~ \"id\":\"([0-9]+)\" ]] && export FUJI_CHAOS_JOB=${BASH_REMATCH[1]}
  exec @FUJI_RANK@ <<<"$line"
fi
export FUJI_CHAOS_JOB=warm
exec @FUJI_RANK@ < <(printf '%s\n' "$line"; exec cat)
"""


# ---------------------------------------------------------------------------------------------
# Invariants
# ---------------------------------------------------------------------------------------------
def db_copy(cluster, dest):
    os.makedirs(dest, exist_ok=True)
    for suffix in ("", "-wal"):
        src = cluster.db + suffix
        if os.path.exists(src):
            shutil.copyfile(src, os.path.join(dest, "fujid.db" + suffix))
    return os.path.join(dest, "fujid.db")


def check(cluster, sampler, shown, db_path, integrity, leftovers, seed):
    results = []
    args = cluster.args

    def verdict(name, failures, detail):
        results.append((name, not failures, detail, failures))

    con = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    rows = {str(r[0]): r[1] for r in con.execute("SELECT id, state FROM jobs")}
    events = {}
    for job_id, seq, at_ms, frm, to, msg in con.execute(
            "SELECT job_id, seq, at_ms, from_state, to_state, message FROM job_events ORDER BY job_id, seq"):
        events.setdefault(str(job_id), []).append((seq, at_ms, frm, to, msg))
    con.close()

    # acknowledged
    fails = [f"job {j}: acknowledged but {'not in the database' if j not in rows else 'unknown to fuji show'}"
             for j in sorted(cluster.acked, key=int) if j not in rows or shown.get(j) is None]
    verdict("acknowledged", fails, f"{len(cluster.acked)} acknowledged jobs; {cluster.submit_failures} submits refused")

    # single_attempt
    fails = []
    seen = set()
    for t, wall, job, inst in sampler.overlaps:
        key = (job, tuple(inst))
        if key in seen:
            continue
        seen.add(key)
        desc = []
        for i in inst:
            rec = sampler.instances.get((job, i), {})
            desc.append(f"{i} pids {sorted(rec.get('pids', []))} parents {sorted(rec.get('ppids', []))} "
                        f"alive {time.strftime('%H:%M:%S', time.localtime(rec.get('first_wall', 0)))}"
                        f"..{time.strftime('%H:%M:%S', time.localtime(rec.get('last_wall', 0)))}")
        fails.append(f"seed {seed} job {job} at {time.strftime('%H:%M:%S', time.localtime(wall))}"
                     f".{int(wall * 1000) % 1000:03d}: {len(inst)} attempts alive: " + "; ".join(desc))
    jobs_ran = len({job for job, _ in sampler.instances})
    verdict("single_attempt", fails, f"{sampler.count} samples; {len(sampler.instances)} attempts of {jobs_ran} jobs seen")

    # terminal
    fails = []
    for j in sorted(cluster.acked, key=int):
        s = (shown.get(j) or {}).get("state")
        ev = events.get(j, [])
        entering = [e for e in ev if e[3] in TERMINAL]
        leaving = [e for e in ev if e[2] in TERMINAL]
        last = ev[-1][3] if ev else None
        problems = []
        if s not in TERMINAL:
            problems.append(f"fuji show says {s}")
        if rows.get(j) != s:
            problems.append(f"jobs.state {rows.get(j)} but fuji show {s}")
        if len(entering) != 1:
            problems.append(f"{len(entering)} events enter a terminal state: "
                            + ", ".join(f"#{e[0]} {e[2]}->{e[3]} ({e[4][:80]})" for e in entering))
        if leaving:
            problems.append("events leave a terminal state: "
                            + ", ".join(f"#{e[0]} {e[2]}->{e[3]} ({e[4][:80]})" for e in leaving))
        if last != s:
            problems.append(f"last event enters {last}, not {s}")
        if problems:
            history = " | ".join(f"#{e[0]} {e[2] or '-'}->{e[3]} {e[4][:70]}" for e in ev[-4:])
            fails.append(f"seed {seed} job {j} ({cluster.acked[j]['kind']}): " + "; ".join(problems)
                         + f"; last events: {history}")
    states = {}
    for j in cluster.acked:
        st = (shown.get(j) or {}).get("state")
        states[st] = states.get(st, 0) + 1
    verdict("terminal", fails, "end states " + ", ".join(f"{k} {v}" for k, v in sorted(states.items(), key=str)))
    # Why jobs that were not cancelled failed: a fault fuji survives may still use up a job's
    # retries (say two kills of its agent); the reason says which.
    for j in sorted(cluster.acked, key=int):
        if (shown.get(j) or {}).get("state") == "FAILED":
            log(f"job {j} ({cluster.acked[j]['kind']}) FAILED: {(shown.get(j) or {}).get('reason', '')[:200]}")

    # cancel
    fails = []
    bound = (args.lease_ttl_ms + args.cancel_grace_ms) / 1000.0 + 1.0
    for j, ack in sorted(cluster.cancel_acks.items()):
        for (job, inst), rec in sampler.instances.items():
            if job != j:
                continue
            if rec["first"] > ack:
                fails.append(f"seed {seed} job {j}: attempt {inst} (pids {sorted(rec['pids'])}) started "
                             f"{rec['first'] - ack:.1f} s after the cancel was acknowledged")
            elif rec["last"] > ack + bound:
                fails.append(f"seed {seed} job {j}: attempt {inst} (pids {sorted(rec['pids'])}) still ran "
                             f"{rec['last'] - ack:.1f} s after the cancel was acknowledged (bound {bound:.1f} s)")
    ended = {j: (shown.get(j) or {}).get("state") for j in cluster.cancel_acks}
    verdict("cancel", fails, f"{len(cluster.cancel_acks)} cancels acknowledged; they ended "
            + (", ".join(f"{j} {s}" for j, s in sorted(ended.items())) or "-"))

    # checkpoint
    fails = []
    files = 0
    samples = sampler.samples
    for j, info in sorted(cluster.acked.items(), key=lambda kv: int(kv[0])):
        save_to = info["save_to"]
        if not save_to or not os.path.isdir(save_to):
            continue
        for step in sorted(os.listdir(save_to)):
            step_dir = os.path.join(save_to, step)
            if not os.path.isdir(step_dir):
                continue
            named = set()
            meta = os.path.join(step_dir, "meta.json")
            if os.path.exists(meta):
                try:
                    m = json.load(open(meta))
                    for k, v in m.items():
                        if "attempt" in k:
                            named.add(json.dumps(v, sort_keys=True))
                except ValueError:
                    fails.append(f"seed {seed} job {j}: {step}/meta.json is not JSON")
            for name in sorted(os.listdir(step_dir)):
                path = os.path.join(step_dir, name)
                if not os.path.isfile(path):
                    continue
                files += 1
                wall = os.stat(path).st_mtime
                # The samples on either side of the write: one attempt ending and the next starting
                # within a sampling interval is not two at once.
                before = [b for _, sw, b in samples if sw <= wall]
                after = [b for _, sw, b in samples if sw > wall]
                alive = set()
                for by_job in (before[-1:] + after[:1]):
                    if len(by_job.get(j, ())) > 1:
                        alive |= by_job[j]
                if len(alive) > 1:
                    fails.append(f"seed {seed} job {j}: {step}/{name} written at "
                                 f"{time.strftime('%H:%M:%S', time.localtime(wall))} while attempts "
                                 f"{sorted(alive)} ran")
            if len(named) > 1:
                fails.append(f"seed {seed} job {j}: {step} names attempts {sorted(named)}")
    verdict("checkpoint", fails, f"{files} checkpoint files checked")

    verdict("integrity", [] if integrity == "ok" else [f"seed {seed}: integrity_check says {integrity!r}"],
            f"PRAGMA integrity_check: {integrity}")
    verdict("no_leftovers", [f"seed {seed}: pid {pid} {argv0} alive after teardown" for pid, argv0, _ in leftovers],
            f"{len(leftovers)} processes of the run alive after teardown")
    return results


# ---------------------------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------------------------
def make_assets(args, root):
    """The tiny random model and English text every schedule copies."""
    os.makedirs(root, exist_ok=True)
    r = subprocess.run([os.path.join(args.bin, "fuji"), "model", "init", "--arch", "tiny", "--out",
                        os.path.join(root, "tiny"), "--seed", "1"], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError("fuji model init: " + r.stderr)
    text = os.path.join(root, "text")
    subprocess.run(["sh", os.path.join(REPO, "tests/reference/make_corpora.sh"), text], check=True,
                   stdout=subprocess.DEVNULL)
    shutil.copyfile(os.path.join(text, "english.txt"), os.path.join(root, "english.txt"))
    shutil.rmtree(text)


def run_schedule(args, index, seed, run_id, faketime_lib):
    rng = random.Random(seed)
    work = os.path.join(args.work_dir, f"schedule-{index}")
    cluster = Cluster(args, work, run_id, rng, faketime_lib)
    sampler = None
    results = None
    kinds = [k for k in args.faults if (k != "clock_jump" or faketime_lib) and (k != "partition" or not args.no_proxy)]
    plan = [rng.choice(kinds) for _ in range(args.faults_per_schedule)]
    log(f"== schedule {index}: seed {seed}; faults {', '.join(plan)}")
    try:
        cluster.setup()
        sampler = Sampler(run_id)
        t_start = now()
        for kind in ["finetune", "infer", "infer", "finetune"] + ["infer"] * max(0, args.jobs - 4):
            cluster.submit(kind)
        for kind in plan:
            time.sleep(rng.uniform(0.5, 3.0))
            cluster.fault(kind, sampler)
            cluster.submit(rng.choice(["infer", "infer", "finetune"]))
        cluster.note("faults over: healing")
        cluster.heal()
        pending = cluster.wait_terminal(args.drain_s)
        if pending:
            cluster.note(f"not terminal after {args.drain_s} s: jobs {sorted(pending, key=int)}")
            cluster.diagnose()
        shown = {j: cluster.show(j) for j in cluster.acked}
        time.sleep(0.3)
        sampler.stop()
        cluster.teardown()
        leftovers = run_processes(run_id)
        for pid, _, _ in leftovers:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        copy = db_copy(cluster, os.path.join(work, "db-copy"))
        try:
            con = sqlite3.connect(copy)
            integrity = "; ".join(r[0] for r in con.execute("PRAGMA integrity_check"))
            con.close()
        except sqlite3.Error as e:
            integrity = f"cannot open: {e}"
        results = check(cluster, sampler, shown, copy, integrity, leftovers, seed)
        log(f"schedule {index} took {now() - t_start:.0f} s; faults run: "
            f"{', '.join(cluster.faults_run) or 'none'}")
    finally:
        if sampler and not sampler.stopped:
            sampler.stop()
        for p in [cluster.fujid] + list(cluster.agents.values()):
            cluster.kill9(p)
        for p in cluster.proxies.values():
            p.stop()
        for pid, _, _ in run_processes(run_id):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if cluster.mounted:
            keep_db = os.path.join(work, "fujid-final")
            if os.path.exists(cluster.db):
                os.makedirs(keep_db, exist_ok=True)
                for name in os.listdir(cluster.state):
                    if name.startswith("fujid.db") or name.endswith(".log"):
                        shutil.copy(os.path.join(cluster.state, name), keep_db)
            subprocess.run(["umount", "-l", cluster.state])
    return results, cluster.faults_run


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--seed", type=int, default=None, help="first schedule's seed (default: random)")
    ap.add_argument("--schedules", type=int, default=3)
    ap.add_argument("--faults-per-schedule", type=int, default=6)
    ap.add_argument("--jobs", type=int, default=6, help="jobs submitted at a schedule's start (>= 4)")
    ap.add_argument("--infer-tokens", type=int, default=96)
    ap.add_argument("--finetune-steps", type=int, default=30)
    ap.add_argument("--lease-ttl-ms", type=int, default=3000)
    ap.add_argument("--cancel-grace-ms", type=int, default=2000, help="the agent's SIGTERM-to-SIGKILL grace")
    ap.add_argument("--drain-s", type=int, default=180, help="bound on the wait for every job to end")
    ap.add_argument("--tmpfs-mib", type=int, default=32)
    ap.add_argument("--no-clock", action="store_true", help="leave the clock jump out")
    ap.add_argument("--no-proxy", action="store_true",
                    help="agents talk to fujid directly (no partitions): to tell a proxy's part in a failure")
    ap.add_argument("--faults", default=",".join(FAULTS),
                    help="the kinds of fault to draw from, comma-separated (default: all)")
    ap.add_argument("--bin", default=os.path.join(os.environ.get("FUJI_BINARY_DIR", os.path.join(REPO, "build")), "bin"))
    ap.add_argument("--work-dir", default=f"/tmp/fuji-chaos-{os.getpid()}")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args()
    # A SIGTERM (ctest's timeout, a person's kill) unwinds through the schedules' teardown.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    if os.geteuid() != 0:
        print("chaos: needs root (a tmpfs for the database, ranks run as the user fuji): skipped")
        return 77
    for b in ("fujid", "fuji-agent", "fuji", "fuji-rank"):
        if not os.access(os.path.join(args.bin, b), os.X_OK):
            print(f"chaos: {args.bin}/{b} not built: skipped")
            return 77
    args.faults = [f for f in args.faults.split(",") if f]
    unknown = [f for f in args.faults if f not in FAULTS]
    if unknown or not args.faults:
        print(f"chaos: unknown faults {unknown}; the kinds are {', '.join(FAULTS)}")
        return 2
    faketime_lib = None
    if not args.no_clock:
        faketime_lib = next((p for p in FAKETIME_LIBS if os.path.exists(p)), None)
        if not faketime_lib:
            log("libfaketime is not installed: the clock jump is left out")
    seed = args.seed if args.seed is not None else random.randrange(1 << 31)
    run_id = uuid.uuid4().hex
    # A work directory a former run left (it failed, or --keep) is removed: only one with the mark.
    marker = os.path.join(args.work_dir, ".fuji-chaos")
    if os.path.exists(marker):
        for name in os.listdir(args.work_dir):
            mnt = os.path.join(args.work_dir, name, "fujid")
            if os.path.ismount(mnt):
                subprocess.run(["umount", "-l", mnt])
        shutil.rmtree(args.work_dir)
    elif os.path.exists(args.work_dir) and os.listdir(args.work_dir):
        print(f"chaos: {args.work_dir} exists and is not a chaos work directory")
        return 2
    os.makedirs(args.work_dir, exist_ok=True)
    open(marker, "w").close()
    os.chmod(args.work_dir, 0o755)
    log(f"chaos run {run_id}: seed {seed}, {args.schedules} schedules of {args.faults_per_schedule} faults, "
        f"work directory {args.work_dir}")
    # The binaries as they are now: a build that relinks one mid-run changes nothing here.
    snapshot = os.path.join(args.work_dir, "bin")
    os.makedirs(snapshot, mode=0o755)
    for b in ("fujid", "fuji-agent", "fuji", "fuji-rank"):
        shutil.copy2(os.path.join(args.bin, b), snapshot)
    log("binaries from " + args.bin + ": " + ", ".join(
        f"{b} {time.strftime('%Y-%m-%d %H:%M', time.localtime(os.stat(os.path.join(args.bin, b)).st_mtime))}"
        for b in ("fujid", "fuji-agent", "fuji", "fuji-rank")))
    # Their data (the tokenizer files) where they look for it: beside their directory.
    share = os.path.join(os.path.dirname(os.path.abspath(args.bin)), "share")
    if os.path.isdir(share):
        os.symlink(share, os.path.join(args.work_dir, "share"))
    args.bin = snapshot
    assets = os.path.join(args.work_dir, "assets")
    make_assets(args, assets)
    args.assets = assets

    failed = False
    totals = {}
    faults = 0
    seeds = []
    for i in range(args.schedules):
        s = seed + i
        seeds.append(s)
        try:
            results, run = run_schedule(args, i, s, run_id, faketime_lib)
        except Exception:  # a schedule that could not run is a failure, with its reason
            print(f"FAIL schedule {i} (seed {s}) could not run:\n{traceback.format_exc()}")
            totals.setdefault("schedule_ran", [0, 0])[1] += 1
            failed = True
            continue
        faults += len(run)
        print(f"-- schedule {i} (seed {s}): invariants")
        for name, ok, detail, fails in results:
            print(f"{'PASS' if ok else 'FAIL'} {name}: {detail}")
            for f in fails[:20]:
                print(f"     {f}")
            if len(fails) > 20:
                print(f"     ... and {len(fails) - 20} more")
            totals.setdefault(name, [0, 0])[0 if ok else 1] += 1
            failed |= not ok
        sys.stdout.flush()
    print(f"== chaos: {len(seeds)} schedules ({args.schedules} asked), {faults} faults, seeds {seeds}")
    for name, (ok, bad) in totals.items():
        print(f"{'PASS' if not bad else 'FAIL'} {name}: held in {ok} of {ok + bad} schedules")
    if not failed and not args.keep:
        shutil.rmtree(args.work_dir, ignore_errors=True)
    else:
        print(f"work directory kept: {args.work_dir}")
    passed = sum(ok for ok, _ in totals.values())
    print(f"{passed} passed, {sum(bad for _, bad in totals.values())} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
