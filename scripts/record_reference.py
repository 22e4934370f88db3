#!/usr/bin/env python3
"""Record llama.cpp reference outputs for weft as small text fixtures.

Recorded with llama-cpp-python 0.3.16 (llama.cpp CPU backend, built AVX2+FMA+F16C,
no AVX512/VNNI), with the command:

    python3 scripts/record_reference.py \
        --model ~/.cache/weft/models/SmolLM2-135M-Instruct.Q4_1.gguf --out-dir tests/fixtures

Writes
  <out-dir>/ref_logits.json  20 prompts (10 plain text, 10 ChatML chat): prompt text,
                             whether special tokens were parsed, prompt token ids, and
                             the logits at the last prompt position: top-64 (id, logit),
                             logits at 256 fixed pseudo-random ids, logsumexp over the
                             full vocabulary.
  <out-dir>/ref_greedy.json  20 prompts (10 plain, 10 chat), 64-token greedy (argmax)
                             continuation each, with the top1-top2 logit margin at each
                             step; stops early on an end-of-generation token.

Reproducibility: prompts are chosen by fixed indices from /work/shared/data (sorted
file lists), decoding is argmax (ties -> lowest id, numpy.argmax), the llama.cpp
context is fixed (n_threads=2, n_threads_batch=2, n_batch=512, n_ubatch=512,
n_ctx=2048, seed=1234, flash_attn=False, f16 KV cache = llama-cpp-python defaults),
and the prompt is evaluated as one batch (all prompts are < 512 tokens) followed by
one-token decode steps. Floats are rounded to 5 decimals.

Tokenization notes (SmolLM2 GGUF): tokenizer.ggml.add_bos_token = false, so
llm.tokenize(text, add_bos=True) and add_bos=False give the same ids (llama.cpp's
add_special only adds BOS when the vocab asks for it). We pass add_bos=False
explicitly. Plain prompts are tokenized with special=False, chat prompts with
special=True (so "<|im_start|>" -> id 1, "<|im_end|>" -> id 2).
"""

import argparse
import hashlib
import json
import math
import os
import sys
import time

import numpy as np

DATA = os.environ.get("WEFT_DATA", "/work/shared/data")
SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
N_TOP = 64
N_PROBE = 256
PROBE_SEED = 20240601
N_GEN = 64
CTX = dict(n_ctx=2048, n_batch=512, n_ubatch=512, n_threads=2, n_threads_batch=2,
           seed=1234, logits_all=False, flash_attn=False)


def chatml(question):
    """Render one user turn exactly as the GGUF's tokenizer.chat_template does
    (default system prompt, add_generation_prompt=True)."""
    return ("<|im_start|>system\n" + SYSTEM + "<|im_end|>\n"
            "<|im_start|>user\n" + question + "<|im_end|>\n"
            "<|im_start|>assistant\n")


# ---------------------------------------------------------------- data access

def read_text(rel):
    with open(os.path.join(DATA, rel), encoding="utf-8") as f:
        return f.read()


def read_jsonl(rel):
    with open(os.path.join(DATA, rel), encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


class Data:
    def __init__(self):
        self.arxiv_files = sorted(os.listdir(os.path.join(DATA, "arxiv")))
        self.nq = read_jsonl("nq-open/NQ-open.dev.jsonl")
        self.passages = read_jsonl("rag-mini-wikipedia/passages.jsonl")
        self.passage_by_id = {p["id"]: p["text"] for p in self.passages}
        self.wiki_qa = read_jsonl("rag-mini-wikipedia/qa_dev400.jsonl")
        with open(os.path.join(DATA, "musique/musique_dev100.json"), encoding="utf-8") as f:
            self.musique = json.load(f)

    def arxiv(self, i):
        return read_text("arxiv/" + self.arxiv_files[i])

    def arxiv_paragraph(self, i, offset=3000):
        """Text of the i-th arxiv article (sorted names), starting at the first
        paragraph break at or after `offset` characters, leading newlines dropped."""
        t = self.arxiv(i)
        p = t.find("\n\n", offset)
        if p < 0:
            p = offset
        return t[p:].lstrip("\n")

    def agent(self, name):
        return read_text("multiagent/%s.txt" % name)

    def musique_rag(self, i, n_ctx, tok, max_tokens_per_passage=180):
        item = self.musique[i]
        parts = []
        for k, c in enumerate(item["ctxs"][:n_ctx]):
            head = ("Passage %d (%s): " % (k + 1, c["title"])) if c["title"] else "Passage %d: " % (k + 1)
            parts.append(head + cut_to_tokens(tok, c["text"], max_tokens_per_passage))
        return ("Answer the question using the passages.\n\n" + "\n\n".join(parts)
                + "\n\nQuestion: " + item["question"])


def cut_to_tokens(tok, text, max_tokens):
    """Longest prefix of `text` ending at a word end (before a whitespace char, or
    the whole text) whose tokenization has <= max_tokens tokens."""
    if len(tok(text)) <= max_tokens:
        return text
    ends = [i for i in range(1, len(text)) if text[i].isspace() and not text[i - 1].isspace()]
    lo, hi, best = 0, len(ends) - 1, None
    while lo <= hi:  # token count is monotone enough in the prefix length
        mid = (lo + hi) // 2
        if len(tok(text[:ends[mid]])) <= max_tokens:
            best, lo = ends[mid], mid + 1
        else:
            hi = mid - 1
    if best is None:
        raise ValueError("cannot cut text to %d tokens" % max_tokens)
    return text[:best]


# ---------------------------------------------------------------- prompt sets

def cut(tok, name, text, max_tokens):
    t = cut_to_tokens(tok, text, max_tokens)
    return (name + " cut%d" % max_tokens if t != text else name), t


def logits_prompts(d, tok):
    """20 prompts: (name, kind, text). kind is 'plain' or 'chat' (text = user question)."""
    plain = [
        ("nq-open[0]", d.nq[0]["question"]),
        cut(tok, "wiki-passage[0]", d.passage_by_id[0], 5),
        cut(tok, "wiki-passage[100]", d.passage_by_id[100], 30),
        ("multiagent/reviewer", d.agent("reviewer")),
        ("wiki-passage[1]", d.passage_by_id[1]),  # carries source mojibake
        ("multiagent/architect", d.agent("architect")),
        cut(tok, "musique[0].ctx[0]", d.musique[0]["ctxs"][0]["text"], 150),
        cut(tok, "arxiv[2] para", d.arxiv_paragraph(2), 220),
        cut(tok, "arxiv[1] para", d.arxiv_paragraph(1), 300),
        cut(tok, "arxiv[0] head", d.arxiv(0), 400),  # raw article start
    ]
    chat = [
        ("chat nq-open[1]", d.nq[1]["question"]),
        ("chat nq-open[2]", d.nq[2]["question"]),
        ("chat nq-open[3]", d.nq[3]["question"]),
        ("chat nq-open[4]", d.nq[4]["question"]),
        ("chat wiki-qa[0]", d.wiki_qa[0]["query"]),
        ("chat wiki-qa[5]", d.wiki_qa[5]["query"]),
        ("chat musique[0] question", d.musique[0]["question"]),
        ("chat musique[1] rag2", d.musique_rag(1, 2, tok)),
        ("chat multiagent/programmer", d.agent("programmer")),
        ("chat summarize arxiv[3] cut200",
         "Summarize the following text:\n\n" + cut_to_tokens(tok, d.arxiv_paragraph(3), 200)),
    ]
    return [(n, "plain", t) for n, t in plain] + [(n, "chat", t) for n, t in chat]


def greedy_prompts(d, tok):
    plain = [
        cut(tok, "musique[3].ctx[0]", d.musique[3]["ctxs"][0]["text"], 80),
        ("wiki-passage[200]", d.passage_by_id[200]),
        ("wiki-passage[300]", d.passage_by_id[300]),
        ("wiki-passage[400]", d.passage_by_id[400]),
        ("multiagent/reviser", d.agent("reviser")),
        cut(tok, "arxiv[4] para", d.arxiv_paragraph(4), 50),
        cut(tok, "arxiv[5] para", d.arxiv_paragraph(5), 100),
        cut(tok, "arxiv[6] para", d.arxiv_paragraph(6), 150),
        cut(tok, "arxiv[7] para", d.arxiv_paragraph(7), 200),
        cut(tok, "arxiv[8] para", d.arxiv_paragraph(8), 300),
    ]
    chat = [
        ("chat nq-open[10]", d.nq[10]["question"]),
        ("chat nq-open[11]", d.nq[11]["question"]),
        ("chat nq-open[12]", d.nq[12]["question"]),
        ("chat nq-open[13]", d.nq[13]["question"]),
        ("chat nq-open[14]", d.nq[14]["question"]),
        ("chat nq-open[15]", d.nq[15]["question"]),
        ("chat wiki-qa[10]", d.wiki_qa[10]["query"]),
        ("chat wiki-qa[20]", d.wiki_qa[20]["query"]),
        ("chat musique[2] rag1", d.musique_rag(2, 1, tok)),
        ("chat multiagent/architect", d.agent("architect")),
    ]
    return [(n, "plain", t) for n, t in plain] + [(n, "chat", t) for n, t in chat]


# ---------------------------------------------------------------- llama.cpp

class Ref:
    def __init__(self, model):
        import llama_cpp
        self.lc = llama_cpp
        self.llm = llama_cpp.Llama(model, verbose=False, **CTX)
        self.n_vocab = self.llm.n_vocab()
        self.vocab = self.llm._model.vocab
        self.eog = [i for i in range(self.n_vocab) if llama_cpp.llama_vocab_is_eog(self.vocab, i)]
        self._check_template()

    def _check_template(self):
        """Make sure our ChatML rendering equals the GGUF's own Jinja template."""
        tmpl = self.llm.metadata.get("tokenizer.chat_template")
        if not tmpl:
            return
        try:
            import jinja2
        except ImportError:
            print("warning: jinja2 missing, chat template not cross-checked", file=sys.stderr)
            return
        q = "test question?"
        r = jinja2.Environment().from_string(tmpl).render(
            messages=[{"role": "user", "content": q}], add_generation_prompt=True)
        if r != chatml(q):
            raise SystemExit("chat template mismatch:\n%r\n%r" % (r, chatml(q)))

    def tokenize(self, text, special):
        return self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=special)

    def last_logits(self):
        p = self.lc.llama_get_logits_ith(self.llm._ctx.ctx, -1)
        return np.ctypeslib.as_array(p, shape=(self.n_vocab,)).astype(np.float32).copy()

    def prefill(self, ids):
        assert 0 < len(ids) <= CTX["n_batch"], "prompt must fit one batch"
        self.llm.reset()
        self.llm._ctx.kv_cache_clear()
        self.llm.eval(ids)
        return self.last_logits()

    def step(self, tok):
        self.llm.eval([tok])
        return self.last_logits()

    def detok(self, ids):
        return self.llm.detokenize(ids, special=True).decode("utf-8", errors="replace")


def r5(x):
    return round(float(x), 5)


def logsumexp(x):
    x = x.astype(np.float64)
    m = x.max()
    return float(m + math.log(np.exp(x - m).sum()))


def top_k(logits, k):
    # stable sort: descending logit, ties by ascending id
    order = np.lexsort((np.arange(len(logits)), -logits))[:k]
    return order


def prompt_entry(ref, name, kind, text):
    special = kind == "chat"
    full = chatml(text) if special else text
    ids = ref.tokenize(full, special)
    return full, special, ids


def record_logits(ref, prompts, probe_ids):
    out = []
    for i, (name, kind, text) in enumerate(prompts):
        full, special, ids = prompt_entry(ref, name, kind, text)
        t0 = time.time()
        lg = ref.prefill(ids)
        top = top_k(lg, N_TOP)
        out.append({
            "name": name, "kind": kind, "special": special, "prompt": full,
            "n_tokens": len(ids), "tokens": [int(t) for t in ids],
            "top": [[int(t), r5(lg[t])] for t in top],
            "probe": [r5(lg[t]) for t in probe_ids],
            "logsumexp": r5(logsumexp(lg)),
        })
        print("[logits %2d/%d] %-32s %4d tokens  argmax %5d (%.3f)  lse %.3f  %.2fs" % (
            i + 1, len(prompts), name, len(ids), top[0], lg[top[0]], logsumexp(lg),
            time.time() - t0), flush=True)
    return out


def record_greedy(ref, prompts):
    out = []
    for i, (name, kind, text) in enumerate(prompts):
        full, special, ids = prompt_entry(ref, name, kind, text)
        t0 = time.time()
        lg = ref.prefill(ids)
        gen, margins, stopped = [], [], False
        for s in range(N_GEN):
            top2 = top_k(lg, 2)
            tok = int(top2[0])
            gen.append(tok)
            margins.append(r5(lg[top2[0]] - lg[top2[1]]))
            if tok in ref.eog:
                stopped = True
                break
            if s + 1 < N_GEN:
                lg = ref.step(tok)
        out.append({
            "name": name, "kind": kind, "special": special, "prompt": full,
            "n_tokens": len(ids), "tokens": [int(t) for t in ids],
            "generated": gen, "margins": margins, "stopped_eog": stopped,
            "text": ref.detok(gen),
        })
        print("[greedy %2d/%d] %-32s %4d+%2d tokens%s  min margin %.4f  %.2fs  %r" % (
            i + 1, len(prompts), name, len(ids), len(gen), " EOG" if stopped else "",
            min(margins), time.time() - t0, ref.detok(gen)[:60]), flush=True)
    return out


def write_fixture(path, meta, key, entries):
    """JSON with one prompt entry per line (diff-friendly, compact)."""
    with open(path, "w", encoding="utf-8") as f:
        f.write("{\n")
        for k, v in meta.items():
            f.write("%s: %s,\n" % (json.dumps(k), json.dumps(v, ensure_ascii=False)))
        f.write("%s: [\n" % json.dumps(key))
        for j, e in enumerate(entries):
            f.write(json.dumps(e, ensure_ascii=False, separators=(",", ":")))
            f.write(",\n" if j + 1 < len(entries) else "\n")
        f.write("]\n}\n")
    with open(path, encoding="utf-8") as f:
        json.load(f)  # sanity
    print("wrote %s (%d bytes)" % (path, os.path.getsize(path)), flush=True)


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for b in iter(lambda: f.read(1 << 20), b""):
            h.update(b)
    return h.hexdigest()


def main():
    default_model = os.environ.get("WEFT_MODEL") or os.path.expanduser(
        "~/.cache/weft/models/SmolLM2-135M-Instruct.Q4_1.gguf")
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=default_model)
    ap.add_argument("--out-dir", default="tests/fixtures")
    ap.add_argument("--flash-attn", action="store_true",
                    help="record with flash_attn=True (default False, the llama-cpp-python default)")
    a = ap.parse_args()
    CTX["flash_attn"] = a.flash_attn

    import llama_cpp
    os.makedirs(a.out_dir, exist_ok=True)
    print("llama-cpp-python %s, model %s" % (llama_cpp.__version__, a.model), flush=True)
    ref = Ref(a.model)
    d = Data()
    tok = lambda s: ref.tokenize(s, False)

    rng = np.random.default_rng(PROBE_SEED)
    probe_ids = sorted(int(x) for x in rng.choice(ref.n_vocab, size=N_PROBE, replace=False))

    meta = {
        "generator": "scripts/record_reference.py",
        "llama_cpp_python": llama_cpp.__version__,
        "llama_system_info": llama_cpp.llama_print_system_info().decode().strip(),
        "model": os.path.basename(a.model),
        "model_sha256": sha256(a.model),
        "n_vocab": ref.n_vocab,
        "context": CTX,
        "tokenize": "llm.tokenize(text, add_bos=False, special=<special>); model has add_bos_token=false",
        "chat_template": chatml("{question}"),
        "eog_ids": ref.eog,
    }

    lp = logits_prompts(d, tok)
    lmeta = dict(meta)
    lmeta.update({
        "description": "logits at the last prompt position after one-batch prefill; "
                       "top = top-%d [id, logit] (desc, ties by id); probe = logits at probe_ids; "
                       "logsumexp over all n_vocab logits (float64)" % N_TOP,
        "probe_seed": "numpy.random.default_rng(%d).choice(n_vocab, %d, replace=False), sorted"
                      % (PROBE_SEED, N_PROBE),
        "probe_ids": probe_ids,
    })
    write_fixture(os.path.join(a.out_dir, "ref_logits.json"), lmeta, "prompts",
                  record_logits(ref, lp, probe_ids))

    gp = greedy_prompts(d, tok)
    gmeta = dict(meta)
    gmeta.update({
        "description": "greedy continuation: prompt evaluated as one batch, then one token per "
                       "decode step; generated[i] = argmax (ties -> lowest id); margins[i] = "
                       "top1 - top2 logit at that step; stops after emitting an eog id "
                       "(stopped_eog) else after %d tokens" % N_GEN,
        "n_gen": N_GEN,
    })
    write_fixture(os.path.join(a.out_dir, "ref_greedy.json"), gmeta, "prompts",
                  record_greedy(ref, gp))


if __name__ == "__main__":
    main()
