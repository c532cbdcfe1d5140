"""Writes the binary seeds of tests/fuzz/corpus (safetensors/, pickle/, zip/): tiny files of the
formats fuji's checkpoint readers take, so that the fuzzer starts from inputs they accept.

Run with Debian's /usr/bin/python3 (python3-torch): tests/fuzz/make_corpus.py
The text seeds (specs, events, config.json, JSON lines, tokenizer text) are written by hand.
"""
import importlib.util
import io
import json
import os
import struct
import zipfile
from collections import OrderedDict

import torch

CORPUS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")
# The zip writer of the torch_zip tests' fixtures (stored records, optionally all-zip64).
_spec = importlib.util.spec_from_file_location(
    "make_torch_checkpoints",
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "make_torch_checkpoints.py"))
fixtures = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fixtures)


def write(kind, name, data):
    os.makedirs(os.path.join(CORPUS, kind), exist_ok=True)
    with open(os.path.join(CORPUS, kind, name), "wb") as f:
        f.write(data)


def safetensors(tensors, metadata=None):
    """tensors: [(name, dtype, shape, bytes)] in data order."""
    header, data = {}, b""
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data


def state_dict():
    torch.manual_seed(0)
    sd = OrderedDict()
    base = torch.arange(6, dtype=torch.float32)
    sd["w"] = base.view(2, 3)
    sd["w.t"] = base.view(2, 3).t()       # a strided view of the same storage
    sd["b"] = torch.nn.Parameter(torch.ones(2, dtype=torch.bfloat16))
    sd["mask"] = torch.tensor([True, False])
    sd["empty"] = torch.zeros(0, 2, dtype=torch.float16)
    sd["tied"] = sd["w"]
    return sd


def main():
    write("safetensors", "two-tensors.safetensors", safetensors(
        [("wte.weight", "F32", [2, 2], struct.pack("<4f", 1, 2, 3, 4)),
         ("ln.bias", "BF16", [2], b"\x80\x3f\x00\x40"),
         ("empty", "F16", [0, 4], b""),
         ("flags", "BOOL", [3], b"\x01\x00\x01")],
        metadata={"format": "pt"}))
    write("safetensors", "i64-scalar.safetensors", safetensors([("step", "I64", [], struct.pack("<q", 7))]))

    sd = state_dict()
    buffer = io.BytesIO()
    torch.save(sd, buffer)
    protocol2 = buffer.getvalue()
    buffer = io.BytesIO()
    torch.save(sd, buffer, pickle_protocol=4)
    protocol4 = buffer.getvalue()
    write("zip", "state-dict.pt", protocol2)
    with zipfile.ZipFile(io.BytesIO(protocol2)) as z:
        records = [(info.filename, z.read(info)) for info in z.infolist()]
        write("pickle", "state-dict-protocol2.pkl", z.read("archive/data.pkl"))
    with zipfile.ZipFile(io.BytesIO(protocol4)) as z:
        write("pickle", "state-dict-protocol4.pkl", z.read("archive/data.pkl"))
    # Only the records the reader needs, re-zipped with every size and offset in zip64 fields.
    needed = [r for r in records if r[0] == "archive/data.pkl" or r[0].startswith("archive/data/")]
    path = os.path.join(CORPUS, "zip", "state-dict-zip64.pt")
    fixtures.write_zip(path, needed, zip64=True)


if __name__ == "__main__":
    main()
