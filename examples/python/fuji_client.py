#!/usr/bin/python3
"""A client of fujid's gRPC API in Python (Debian's python3-grpcio), next to the fuji CLI.

  fuji_client.py --address HOST:PORT --ca CA.crt --token-file TOKEN jobs
      the caller's jobs, newest first, as a table (the columns of `fuji jobs`, AGE as a time)
  fuji_client.py ... samples JOB
      the job's memory samples as nvidia-smi CSV, the header and rows of
      `fuji samples JOB --format csv`

The stubs are generated from proto/ into a directory (README.md says how) given by --stubs or
$FUJI_PY_STUBS. Every call carries the token ("authorization: Bearer TOKEN") over TLS checked
against fujid's CA and has a deadline; a refused token, an unreachable fujid or a bad argument is
one line on stderr and a non-zero exit (1: fujid said no or was not reached; 2: usage or a local
file), never a traceback.
"""

import argparse
import os
import sys
import time

MAX_TOKEN_BYTES = 4096        # a token file is one short line
MAX_CA_BYTES = 1 << 20        # a PEM bundle
MAX_JOBS = 100000             # `jobs` stops paging here
PAGE_SIZE = 1000              # the most fujid answers in one ListJobs page
MAX_MESSAGE_BYTES = 256 << 20  # as the CLI: a long job's samples


class Failure(Exception):
    """One line for stderr and the exit code."""

    def __init__(self, message, code=1):
        super().__init__(message)
        self.code = code


def read_bounded(path, limit, what):
    try:
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except OSError as e:
        raise Failure(f"{what} {path}: {e.strerror}", 2) from None
    if len(data) > limit:
        raise Failure(f"{what} {path}: larger than {limit} bytes", 2)
    return data


def import_stubs(stubs_dir):
    if stubs_dir:
        if not os.path.isdir(os.path.join(stubs_dir, "fuji", "v1")):
            raise Failure(f"--stubs {stubs_dir}: no fuji/v1 inside; generate the stubs first (README.md)", 2)
        sys.path.insert(0, stubs_dir)
    try:
        import grpc  # noqa: F401  (Debian's python3-grpcio)
        from fuji.v1 import jobs_pb2, jobs_pb2_grpc
    except ImportError as e:
        raise Failure(f"cannot import the stubs or grpc ({e}); see README.md", 2) from None
    return jobs_pb2, jobs_pb2_grpc


class Client:
    """One TLS channel to fujid, the token on every call, a deadline on every call."""

    def __init__(self, args, jobs_pb2, jobs_pb2_grpc):
        import grpc

        self.grpc = grpc
        self.pb = jobs_pb2
        self.address = args.address
        self.token_file = args.token_file
        self.timeout = args.timeout
        token = read_bounded(args.token_file, MAX_TOKEN_BYTES, "--token-file").decode("utf-8", "replace").strip()
        if not token or any(c.isspace() or not c.isprintable() for c in token):
            raise Failure(f"--token-file {args.token_file}: not one token on one line", 2)
        self.metadata = (("authorization", "Bearer " + token),)
        ca = read_bounded(args.ca, MAX_CA_BYTES, "--ca")
        credentials = grpc.ssl_channel_credentials(root_certificates=ca)
        options = [("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                   ("grpc.initial_reconnect_backoff_ms", 200), ("grpc.max_reconnect_backoff_ms", 1000)]
        self.channel = grpc.secure_channel(args.address, credentials, options=options)
        self.stub = jobs_pb2_grpc.JobServiceStub(self.channel)

    def call(self, method, request):
        try:
            return getattr(self.stub, method)(request, timeout=self.timeout, metadata=self.metadata)
        except self.grpc.RpcError as e:
            raise self.failure(e) from None

    def failure(self, error):
        code, details = error.code(), (error.details() or "").replace("\n", " ")
        codes = self.grpc.StatusCode
        if code == codes.UNAUTHENTICATED:
            return Failure(f"fujid at {self.address} refused the token from {self.token_file} ({details}): "
                           "ask an admin for a new token")
        if code in (codes.UNAVAILABLE, codes.DEADLINE_EXCEEDED):
            return Failure(f"cannot reach fujid at {self.address} within {self.timeout:g} s: {details} "
                           "(is it running, and is --ca the CA that signed its certificate?)")
        return Failure(f"fujid: {code.name}: {details}")

    def jobs(self):
        out, page_token = [], 0
        while len(out) < MAX_JOBS:
            request = self.pb.ListJobsRequest(limit=PAGE_SIZE, page_token=page_token)
            response = self.call("ListJobs", request)
            out.extend(response.jobs)
            page_token = response.next_page_token
            if page_token == 0:
                break
        return out[:MAX_JOBS]

    def samples(self, job_id):
        return self.call("GetSamples", self.pb.JobRef(id=job_id)).samples


def local_time(epoch_ms):
    """The CLI's FormatLocalTime: "2026/12/03 19:58:15.123" in local time."""
    secs = epoch_ms // 1000  # floor, as the CLI's for times before 1970
    return time.strftime("%Y/%m/%d %H:%M:%S", time.localtime(secs)) + ".%03d" % (epoch_ms - secs * 1000)


CSV_HEADER = "timestamp, index, name, memory.used [MiB], memory.total [MiB], utilization.gpu [%]"


def csv_row(s):
    """The CLI's SampleCsvRow: a host-memory sample is index -1, "host memory"."""
    index = -1 if s.host_memory else s.device_index
    name = "host memory" if s.host_memory else s.device_name
    return (f"{local_time(s.at_ms)}, {index}, {name}, {s.used_mib} MiB, {s.total_mib} MiB, "
            f"{s.utilization_pct} %")


def jobs_table(jobs, state_name):
    header = ["ID", "STATE", "KIND", "PRIO", "ATTEMPTS", "SUBMITTED", "REASON"]
    rows = []
    for j in jobs:
        attempts = str(j.attempts) + (f"/{j.max_attempts}" if j.max_attempts > 0 else "")
        reason = j.reason.replace("\n", " ")[:80]
        rows.append([str(j.id), state_name(j.state), j.kind, str(j.priority), attempts,
                     local_time(j.submitted_at_ms), reason])
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [header] + rows]
    return "\n".join(lines) + "\n"


def parse_args(argv):
    p = argparse.ArgumentParser(description="A client of fujid's gRPC API: your jobs, a job's samples.")
    p.add_argument("--address", default=os.environ.get("FUJI_SERVER") or "127.0.0.1:7070",
                   help="fujid's address, HOST:PORT (default: $FUJI_SERVER, else 127.0.0.1:7070)")
    p.add_argument("--ca", default=os.environ.get("FUJI_CA"), required=not os.environ.get("FUJI_CA"),
                   help="the CA certificate that signed fujid's (fujid's ca.crt; default: $FUJI_CA)")
    p.add_argument("--token-file", required=True, help="a file holding your token (fuji admin user add)")
    p.add_argument("--stubs", default=os.environ.get("FUJI_PY_STUBS"),
                   help="the directory the stubs were generated into (default: $FUJI_PY_STUBS)")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds each call may take (default 10)")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("jobs", help="your jobs, newest first")
    samples = sub.add_parser("samples", help="a job's memory samples as nvidia-smi CSV")
    samples.add_argument("job", type=int, help="the job's id")
    args = p.parse_args(argv)
    if not 0 < args.timeout <= 3600:
        p.error("--timeout must be above 0 and at most 3600 seconds")
    if args.command == "samples" and args.job <= 0:
        p.error("JOB must be a job id above 0")
    return args


def main(argv):
    args = parse_args(argv)
    try:
        jobs_pb2, jobs_pb2_grpc = import_stubs(args.stubs)
        client = Client(args, jobs_pb2, jobs_pb2_grpc)
        if args.command == "jobs":
            sys.stdout.write(jobs_table(client.jobs(), jobs_pb2.JobState.Name))
        else:
            samples = client.samples(args.job)
            sys.stdout.write("".join(line + "\n" for line in [CSV_HEADER] + [csv_row(s) for s in samples]))
    except Failure as e:
        print(f"fuji_client: {e}", file=sys.stderr)
        return e.code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `| head`: the reader has gone
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
