#!/usr/bin/env python3
"""Write a few tiny valid GGUF files into a directory, as a seed corpus for
tests/fuzz/fuzz_gguf.  Usage: make_seed.py OUT_DIR   (stdlib only)."""
import os
import struct
import sys

U8, I8, U16, I16, U32, I32, F32, BOOL, STR, ARR, U64, I64, F64 = range(13)
SCALAR_FMT = {U8: "<B", I8: "<b", U16: "<H", I16: "<h", U32: "<I", I32: "<i",
              F32: "<f", BOOL: "<?", U64: "<Q", I64: "<q", F64: "<d"}
# GGML type id -> (block size, bytes per block)
GGML = {"f32": (0, 1, 4), "f16": (1, 1, 2), "q4_0": (2, 32, 18), "q4_1": (3, 32, 20),
        "q8_0": (8, 32, 34), "q4_k": (12, 256, 144), "q6_k": (14, 256, 210),
        "bf16": (30, 1, 2)}


def gstr(s):
    b = s.encode() if isinstance(s, str) else s
    return struct.pack("<Q", len(b)) + b


def value(t, v):
    if t == STR:
        return gstr(v)
    if t == ARR:
        et, items = v
        out = struct.pack("<IQ", et, len(items))
        return out + b"".join(value(et, x) for x in items)
    return struct.pack(SCALAR_FMT[t], v)


def gguf(kvs, tensors, version=3, alignment=32):
    """kvs: [(key, type, value)]; tensors: [(name, ggml type name, ne list)]."""
    out = b"GGUF" + struct.pack("<IQQ", version, len(tensors), len(kvs))
    for key, t, v in kvs:
        out += gstr(key) + struct.pack("<I", t) + value(t, v)
    blobs, offset = [], 0
    for i, (name, tname, ne) in enumerate(tensors):
        tid, bs, ts = GGML[tname]
        n = 1
        for d in ne:
            n *= d
        size = n // bs * ts
        out += gstr(name) + struct.pack("<I", len(ne)) + b"".join(struct.pack("<Q", d) for d in ne)
        out += struct.pack("<IQ", tid, offset)
        blob = bytes((i * 7 + k) & 0xFF for k in range(size))
        blob += b"\0" * (-size % alignment)
        blobs.append(blob)
        offset += len(blob)
    out += b"\0" * (-len(out) % alignment)
    return out + b"".join(blobs)


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: make_seed.py OUT_DIR")
    d = sys.argv[1]
    os.makedirs(d, exist_ok=True)
    every_scalar = [("s.%d" % t, t, v) for t, v in
                    [(U8, 7), (I8, -7), (U16, 700), (I16, -700), (U32, 70000), (I32, -70000),
                     (F32, 0.5), (BOOL, True), (U64, 1 << 40), (I64, -(1 << 40)), (F64, 2.5)]]
    seeds = {
        "empty.gguf": gguf([], []),
        "v2_scalars.gguf": gguf(every_scalar + [("general.name", STR, "tiny")], [], version=2),
        "arrays.gguf": gguf([
            ("tokenizer.ggml.tokens", ARR, (STR, ["<s>", "</s>", "a", "", "\u0120b"])),
            ("tokenizer.ggml.scores", ARR, (F32, [0.0, -1.0, -2.5])),
            ("tokenizer.ggml.token_type", ARR, (I32, [1, 3, 1])),
            ("u8s", ARR, (U8, [])),
            ("u64s", ARR, (U64, [1, 2])),
        ], []),
        "tensors.gguf": gguf([
            ("general.architecture", STR, "llama"),
            ("llama.block_count", U32, 1),
            ("llama.embedding_length", U32, 32),
        ], [
            ("token_embd.weight", "q8_0", [32, 4]),
            ("output_norm.weight", "f32", [32]),
            ("blk.0.attn_q.weight", "q4_1", [32, 2, 1]),
            ("blk.0.ffn_up.weight", "f16", [2, 1, 1, 3]),
        ]),
        "align64.gguf": gguf([("general.alignment", U32, 64)], [
            ("a", "bf16", [3]),
            ("b", "q4_0", [64]),
            ("c", "q6_k", [256]),
        ], alignment=64),
    }
    for name, data in seeds.items():
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)
    print("wrote %d seeds to %s" % (len(seeds), d))


if __name__ == "__main__":
    main()
