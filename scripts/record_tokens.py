#!/usr/bin/env python3
"""Records llama.cpp's tokenization of real texts as the reference for weft's
tokenizer (tests/model/test_tokenizer_ref.c).

    python3 scripts/record_tokens.py [--model PATH] [--data DIR] [--out FILE]

Needs llama-cpp-python (the vocabulary is loaded with vocab_only=True). The
selection is deterministic: sorted file lists, fixed offsets drawn from a
seeded generator, so re-running it on the same data and llama.cpp version
rewrites the same file. Each output line is
    {"text": str, "special": bool, "ids": [int, ...]}
where ids = llm.tokenize(text.encode(), add_bos=False, special=special). The
script also checks that llama.cpp detokenizes the ids back to the text bytes
(only the ids are recorded).
"""
import argparse
import glob
import json
import os
import random
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

EDGE_CASES = [
    "",
    " ",
    "    ",
    "\t",
    "\n",
    "\n\n\n",
    "\t\t\n \n\t  x",
    "a\r\nb\r\n\r\n",
    "   leading and trailing   ",
    "12345678",
    "3.14159 and 2,718 and 1e-9",
    "x = 1000000; y=42",
    "Hello 🙂 world 👍🏽 family 👨‍👩‍👧",
    "🙂🙂🙂",
    "中文分词测试：今天天气很好。",
    "日本語のテキストです。カタカナもある。",
    "한국어 문장입니다.",
    "Ünïcödé àccénts: café, naïve, façade, Øresund, Łódź",
    "Привет, мир! Ελληνικά κείμενο.",
    "العربية نص עברית",
    "हिन्दी पाठ",
    "<|im_start|>",
    "<|im_start|>user\nHi<|im_end|>",
    "<|endoftext|>",
    "don't I'll we've they're she's I'm he'd DON'T",
    "mixed\u00a0nbsp\u2003em\u3000ideographic spaces",
    "zero\u200bwidth\u200djoiner\ufeffbom",
    "tabs\tand\u000bvertical\u000cfeed",
    "punctuation!!! ??? ... --- ___ *** ### @@@",
    "def f(x):\n    return x ** 2  # square\n\n\n\nclass A:\n\tpass\n",
    "{\"key\": [1, 2, 3], \"nested\": {\"a\": null}}",
    "https://example.com/path?query=1&b=2#frag",
    "       \n       \n",
    "a" * 300,
    "=" * 200,
    " " * 100 + "x",
    "\u0085next line\u2028line sep\u2029para sep",
    "combining: e\u0301 a\u0300 n\u0303",
    "math: ∑ ∫ √ ≤ ≥ ≠ ∞ α β γ",
    "emoji flags 🇫🇷🇯🇵 and keycap 1️⃣",
]

SPECIAL_CASES = [
    "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n",
    "text before<|endoftext|>text after",
    "<|im_start|><|im_end|><|im_start|>",
    "<|im_start|> spaced <|im_end|> out",
    "<repo_name>weft<file_sep>engine/tokenizer.c<filename>",
    "<jupyter_start><jupyter_code>print(1)<jupyter_output>1<empty_output>",
    "<|im_start|",
    "no specials at all, just text",
    "<|im_end|>\n\n<|im_start|>user\n12345<|im_end|>",
    "",
]


def chunks_of(text, rng, n, lo, hi):
    out = []
    if len(text) <= lo:
        return [text]
    for _ in range(n):
        size = rng.randint(lo, hi)
        start = rng.randint(0, max(0, len(text) - size))
        out.append(text[start:start + size])
    return out


def first_unicode_window(text, size):
    for i, c in enumerate(text):
        if ord(c) > 127:
            start = max(0, i - size // 3)
            return text[start:start + size]
    return None


def select_texts(data):
    rng = random.Random(20240531)
    texts = []

    # arXiv articles: three random chunks each, plus a window around the first
    # non-ASCII character (math symbols, accents, ligatures).
    arxiv = sorted(glob.glob(os.path.join(data, "arxiv", "*.txt")))
    for path in arxiv:
        with open(path, encoding="utf-8") as f:
            t = f.read()
        texts += chunks_of(t, rng, 3, 200, 1500)
        w = first_unicode_window(t, rng.randint(200, 800))
        if w:
            texts.append(w)
    # the largest article whole: long-input check
    largest = max(arxiv, key=lambda p: (os.path.getsize(p), p))
    with open(largest, encoding="utf-8") as f:
        texts.append(f.read())

    # Wikipedia passages, mojibake included on purpose.
    with open(os.path.join(data, "rag-mini-wikipedia", "passages.jsonl"), encoding="utf-8") as f:
        passages = [json.loads(l)["text"] for l in f if l.strip()]
    picked = sorted(rng.sample(range(len(passages)), 40))
    moji = [i for i, p in enumerate(passages) if "Ã" in p or "â€" in p][:10]
    for i in sorted(set(picked) | set(moji)):
        texts.append(passages[i])
    with open(os.path.join(data, "rag-mini-wikipedia", "qa_dev400.jsonl"), encoding="utf-8") as f:
        qa = [json.loads(l)["query"] for l in f if l.strip()]
    texts += [qa[i] for i in sorted(rng.sample(range(len(qa)), 10))]

    # NQ-open questions.
    with open(os.path.join(data, "nq-open", "NQ-open.dev.jsonl"), encoding="utf-8") as f:
        nq = [json.loads(l)["question"] for l in f if l.strip()]
    texts += [nq[i] for i in sorted(rng.sample(range(len(nq)), 30))]

    # MuSiQue passages and questions.
    with open(os.path.join(data, "musique", "musique_dev100.json"), encoding="utf-8") as f:
        mq = json.load(f)
    for i in sorted(rng.sample(range(len(mq)), 12)):
        item = mq[i]
        texts.append(item["question"])
        ctx = item["ctxs"][rng.randrange(len(item["ctxs"]))]
        texts.append((ctx.get("title", "") + "\n" + ctx["text"]).strip())

    # OpenAPI YAML: indentation runs, code, long lines.
    with open(os.path.join(data, "openai", "openapi.yaml"), encoding="utf-8") as f:
        y = f.read()
    texts += chunks_of(y, rng, 25, 300, 1500)

    # Multi-agent role templates with {slot} placeholders.
    for path in sorted(glob.glob(os.path.join(data, "multiagent", "*.txt"))):
        with open(path, encoding="utf-8") as f:
            texts.append(f.read())

    texts += EDGE_CASES
    return texts


def detokenize(llm, ids, special):
    # llama_token_to_piece per token with a buffer that grows: Llama.detokenize
    # uses a fixed 32-byte buffer and garbles longer pieces (runs of "=" or
    # spaces are single tokens in SmolLM2's vocabulary).
    import ctypes
    import llama_cpp

    vocab = llm._model.vocab
    out = b""
    buf = ctypes.create_string_buffer(256)
    for t in ids:
        n = llama_cpp.llama_token_to_piece(vocab, t, buf, len(buf), 0, special)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = llama_cpp.llama_token_to_piece(vocab, t, buf, len(buf), 0, special)
        out += buf.raw[:n]
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=os.environ.get(
        "WEFT_MODEL", os.path.expanduser("~/.cache/weft/models/SmolLM2-135M-Instruct.Q4_1.gguf")))
    ap.add_argument("--data", default=os.path.join(ROOT, "..", "shared", "data"))
    ap.add_argument("--out", default=os.path.join(ROOT, "tests", "fixtures", "ref_tokens.jsonl"))
    args = ap.parse_args()

    import llama_cpp

    llm = llama_cpp.Llama(model_path=args.model, vocab_only=True, verbose=False)

    rows = [(t, False) for t in select_texts(args.data)] + [(t, True) for t in SPECIAL_CASES]
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    bad = 0
    with open(args.out, "w", encoding="utf-8") as f:
        for text, special in rows:
            b = text.encode("utf-8")
            ids = llm.tokenize(b, add_bos=False, special=special)
            back = detokenize(llm, ids, special)
            if back != b:
                bad += 1
                print("detokenize mismatch: %r" % text[:60], file=sys.stderr)
            f.write(json.dumps({"text": text, "special": special, "ids": ids},
                               ensure_ascii=False) + "\n")
    print("%d texts, %d detokenize mismatches, %d bytes -> %s"
          % (len(rows), bad, os.path.getsize(args.out), args.out))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
