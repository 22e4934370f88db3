#!/usr/bin/env python3
"""Write a seed corpus for tests/fuzz/fuzz_tokenizer into a directory: pieces
of the arXiv articles of the data directory and a few hand-made texts (chat
markup, several scripts, emoji, runs of spaces and newlines, digits, NUL and
control bytes), each under the four flag bytes the target reads first
(add_special, parse_special).  Usage: make_seed_text.py OUT_DIR [DATA_DIR]
(stdlib only; DATA_DIR defaults to $WEFT_DATA_DIR or ../shared/data)."""
import os
import sys

out = sys.argv[1]
data = sys.argv[2] if len(sys.argv) > 2 else os.environ.get("WEFT_DATA_DIR", "../shared/data")
os.makedirs(out, exist_ok=True)
texts = [
    b"<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n",
    "h\u00e9llo w\u00f6rld \u2014 \u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8 \U0001f642 \u0928\u092e\u0938\u094d\u0924\u0947\t\n  x".encode(),
    b"  multiple   spaces\n\n\nnewlines 12345 3.14159 can't won't I'm they'll",
    b"nul\x00inside, controls \x01\x04\x06\x1f\x7f and <|endoftext|> typed",
]
arxiv = os.path.join(data, "arxiv")
if os.path.isdir(arxiv):
    for name in sorted(os.listdir(arxiv))[:3]:
        with open(os.path.join(arxiv, name), "rb") as f:
            texts.append(f.read()[:1500])
for i, t in enumerate(texts):
    for flags in range(4):
        with open(os.path.join(out, "text%d_%d" % (i, flags)), "wb") as f:
            f.write(bytes([flags]) + t)
print("%d seeds in %s" % (4 * len(texts), out))
