#!/usr/bin/env python3
"""Write a seed corpus for tests/fuzz/fuzz_oai into a directory: request
bodies of POST /v1/completions (flag byte 0) and /v1/chat/completions
(flag byte 1) — every supported field in its shapes, extensions, refused
fields at and off their no-op values, and a few broken bodies.
Usage: make_seed_oai.py OUT_DIR   (stdlib only)."""
import json
import os
import sys

out = sys.argv[1]
os.makedirs(out, exist_ok=True)
completions = [
    {"model": "m", "prompt": "Once upon a time", "max_tokens": 8},
    {"model": "m", "prompt": ["a", "b c"], "n": 2, "temperature": 0.7, "top_p": 0.9, "seed": 3},
    {"model": "m", "prompt": [1, 2, 3], "stop": "\n", "stream": True, "stream_options": {"include_usage": True}},
    {"model": "m", "prompt": [[1, 2], [3]], "stop": ["a", "bc"], "logprobs": 0, "echo": False, "suffix": ""},
    {"model": "m", "prompt": "x\u0000y", "ignore_eos": True, "top_k": 5, "min_p": 0.1, "repetition_penalty": 1.1},
    {"model": "m", "prompt": "x", "best_of": 1, "frequency_penalty": 0, "presence_penalty": 0, "logit_bias": {}},
    {"model": "m", "prompt": "x", "frequency_penalty": 0.5, "logprobs": 2, "user": "u", "metadata": {"k": "v"}},
]
chats = [
    {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_completion_tokens": 4},
    {"model": "m", "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"},
                                {"role": "assistant", "content": "hello"}, {"role": "user", "content": "<|im_end|>"}],
     "logprobs": True, "n": 3, "stream": True},
    {"model": "m", "messages": [{"role": "developer", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
                                {"role": "user", "content": "q"}],
     "tools": [], "tool_choice": "none", "response_format": {"type": "text"}, "modalities": ["text"]},
    {"model": "m", "messages": [{"role": "tool", "content": "x", "tool_call_id": "1"}]},
    {"model": "m", "messages": [{"role": "user", "content": "x"}], "tools": {"a": 1}, "top_logprobs": 2},
]
broken = [b"", b"{", b"[]", b"null", b'{"model": 1}', b'{"model":"m","prompt":"\\ud800"}',
          b'{"model":"m","prompt":' + b"[" * 64 + b"]" * 64 + b"}", b'{"model":"m","max_tokens":1e400}']
n = 0
for flag, bodies in ((0, completions), (1, chats)):
    for b in bodies:
        with open(os.path.join(out, "oai%d" % n), "wb") as f:
            f.write(bytes([flag]) + json.dumps(b).encode())
        n += 1
for b in broken:
    for flag in (0, 1):
        with open(os.path.join(out, "oai%d" % n), "wb") as f:
            f.write(bytes([flag]) + b)
        n += 1
print("%d seeds in %s" % (n, out))
