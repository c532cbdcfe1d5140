"""Writes the torch.save zip fixtures for tests/unit/torch_zip_test.cc into a directory.

Run with Debian's /usr/bin/python3 (python3-torch): make_torch_checkpoints.py OUT_DIR

  gpt2.bin            torch.save of a small GPT-2-style state dict (protocol 2, as HF writes it)
  gpt2_proto4.bin     the same dict pickled with protocol 4 (FRAME, MEMOIZE, STACK_GLOBAL)
  zip64.bin           gpt2.bin's records re-zipped with every size and offset in zip64 fields
  compressed.bin      gpt2.bin's records deflated
  missing_record.bin  gpt2.bin without the storage record of 'wte.weight'
  small_storage.bin   gpt2.bin with the shared storage record cut short
  legacy.bin          the dict in torch's pre-1.6 format, a bare pickle stream (not supported)
  malicious.bin       a data.pkl whose object reduces to os.system('true'); never loaded here
  expected.json       names, dtypes, shapes, strides, storage offsets and bytes of gpt2.bin
"""
import io
import json
import os
import pickle
import struct
import sys
import zipfile
import zlib
from collections import OrderedDict

import torch


def state_dict():
    torch.manual_seed(0)
    sd = OrderedDict()
    sd["wte.weight"] = torch.randn(5, 4)
    sd["h.0.attn.c_attn.weight"] = torch.randn(4, 12)
    sd["h.0.attn.c_attn.bias"] = torch.nn.Parameter(torch.randn(12))  # via _rebuild_parameter
    sd["h.0.attn.bias"] = torch.tril(torch.ones(3, 3, dtype=torch.uint8)).view(1, 1, 3, 3)
    # Three views of one storage: contiguous, offset, and transposed (non-contiguous).
    base = torch.arange(24, dtype=torch.float32)
    sd["shared.a"] = base[:12].view(3, 4)
    sd["shared.b"] = base[4:].view(4, 5)
    sd["shared.t"] = base[:12].view(3, 4).t()
    sd["ln_f.weight"] = torch.randn(4).to(torch.bfloat16)
    sd["ln_f.bias"] = torch.randn(4).to(torch.float16)
    sd["h.0.flag"] = torch.tensor([True, False, True])
    sd["position_ids"] = torch.arange(6, dtype=torch.int64).view(1, 6)
    sd["empty"] = torch.zeros(0, 4)
    sd["lm_head.weight"] = sd["wte.weight"]  # tied: the pickle refers back to the same tensor
    sd._metadata = OrderedDict({"": {"version": 1}})  # as nn.Module.state_dict() sets it
    return sd


def expected(sd):
    out = []
    for name, t in sd.items():
        out.append({
            "name": name,
            "dtype": {torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16",
                      torch.uint8: "U8", torch.bool: "BOOL", torch.int64: "I64"}[t.dtype],
            "shape": list(t.shape),
            "strides": list(t.stride()),
            "storage_offset": t.storage_offset(),
            "hex": t.detach().contiguous().view(torch.uint8).numpy().tobytes().hex(),
        })
    return {"tensors": out}


def write_zip(path, records, zip64):
    """Writes stored records [(name, bytes)]. Local headers carry an extra field the central
    headers lack, so readers must take the data offset from the local header. With zip64 every
    32-bit size, offset and count is saturated and lives only in the zip64 structures."""
    out, central = bytearray(), bytearray()
    for name, data in records:
        n, crc, offset = name.encode(), zlib.crc32(data), len(out)
        local_extra = struct.pack("<HH", 0xCAFE, 6) + bytes(6)
        out += struct.pack("<IHHHHHIIIHH", 0x04034B50, 45, 0, 0, 0, 0, crc, len(data), len(data),
                           len(n), len(local_extra)) + n + local_extra + data
        if zip64:
            extra = struct.pack("<HHQQQ", 1, 24, len(data), len(data), offset)
            size32, offset32 = 0xFFFFFFFF, 0xFFFFFFFF
        else:
            extra, size32, offset32 = b"", len(data), offset
        central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 45, 45, 0, 0, 0, 0, crc, size32,
                               size32, len(n), len(extra), 0, 0, 0, 0, offset32) + n + extra
    cd_offset, count = len(out), len(records)
    out += central
    if zip64:
        end64 = len(out)
        out += struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, 45, 45, 0, 0, count, count, len(central),
                           cd_offset)
        out += struct.pack("<IIQI", 0x07064B50, 0, end64, 1)
        out += struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    else:
        out += struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, count, count, len(central), cd_offset, 0)
    with open(path, "wb") as f:
        f.write(out)
    assert zipfile.ZipFile(path).testzip() is None  # the fixture itself is a valid zip


class Malicious:
    def __reduce__(self):
        return (os.system, ("true",))


def main():
    out_dir = sys.argv[1]
    os.makedirs(out_dir, exist_ok=True)
    sd = state_dict()
    gpt2 = os.path.join(out_dir, "gpt2.bin")
    torch.save(sd, gpt2)
    # torch.save names the top-level folder after the file; this one is "archive/" as in a buffer.
    buffer = io.BytesIO()
    torch.save(sd, buffer, pickle_protocol=4)
    with open(os.path.join(out_dir, "gpt2_proto4.bin"), "wb") as f:
        f.write(buffer.getvalue())

    torch.save(sd, os.path.join(out_dir, "legacy.bin"), _use_new_zipfile_serialization=False)

    with zipfile.ZipFile(gpt2) as z:
        records = [(info.filename, z.read(info)) for info in z.infolist()]
    prefix = records[0][0].split("/")[0]
    write_zip(os.path.join(out_dir, "zip64.bin"), records, zip64=True)
    with zipfile.ZipFile(os.path.join(out_dir, "compressed.bin"), "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in records:
            z.writestr(name, data)

    # Storage keys in pickle order: 0 is wte.weight's, 4 is the one shared.* view.
    wte_key = f"{prefix}/data/0"
    shared_key = f"{prefix}/data/4"
    assert dict(records)[shared_key] == torch.arange(24, dtype=torch.float32).numpy().tobytes()
    write_zip(os.path.join(out_dir, "missing_record.bin"),
              [r for r in records if r[0] != wte_key], zip64=False)
    write_zip(os.path.join(out_dir, "small_storage.bin"),
              [(n, d[:8] if n == shared_key else d) for n, d in records], zip64=False)
    write_zip(os.path.join(out_dir, "malicious.bin"),
              [("archive/data.pkl", pickle.dumps(Malicious(), protocol=2)),
               ("archive/version", b"3\n")], zip64=False)

    with open(os.path.join(out_dir, "expected.json"), "w") as f:
        json.dump(expected(sd), f, indent=1)


if __name__ == "__main__":
    main()
