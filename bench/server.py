#!/usr/bin/env python3
"""`weft serve` against llama.cpp's own llama-server (parallel slots,
continuous batching), same model, same prompts, same run: throughput and
TTFT/TPOT p50/p99 at 1, 8 and 32 concurrent streaming clients over
POST /v1/completions. The servers run one after the other (never together:
they would share the cores). Prints a table and the weft/llama ratios and
appends one JSON line to bench/results/server.jsonl.

  ./scripts/setup.sh --reference      # builds llama-server (~10 min), once
  python3 bench/server.py [--concurrency 1,8,32] [--max-tokens 64] [--threads 2]

Prompts: passages cut from the arXiv articles of ../shared/data (mixed
lengths, 30-200 words: 50-800 tokens), the same list for both servers. Every request is
greedy and generates exactly --max-tokens tokens (ignore_eos, which both
servers take), so both do the same work. TTFT is from sending the request to
the first streamed text; TPOT is (last - first token time) / (tokens - 1).
"""
import argparse
import datetime
import glob
import http.client
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time

here = os.path.dirname(os.path.abspath(__file__))
root = os.path.dirname(here)


def model_path():
    if os.environ.get("WEFT_MODEL"):
        return os.environ["WEFT_MODEL"]
    d = os.environ.get("WEFT_MODEL_DIR") or os.path.expanduser("~/.cache/weft/models")
    return os.path.join(d, "SmolLM2-135M-Instruct.Q4_1.gguf")


def prompts(data_dir, n, seed=7):
    """n passages of 30-200 words cut from the arXiv articles."""
    words = []
    for f in sorted(glob.glob(os.path.join(data_dir, "arxiv", "*")))[:10]:
        with open(f, encoding="utf-8", errors="replace") as fh:
            words.extend(fh.read().split())
    rnd = random.Random(seed)
    out = []
    for _ in range(n):
        k = rnd.randint(30, 200)
        at = rnd.randrange(0, len(words) - k)
        out.append(" ".join(words[at:at + k]))
    return out


def free_port():
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_ready(port, proc, timeout=300):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            c.request("GET", "/health")
            r = c.getresponse()
            r.read()
            if r.status == 200:
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError("server not ready")


def start_weft(binary, args):
    port = free_port()
    cmd = [binary, "serve", "--port", str(port), "-t", str(args.threads), "--parallel", str(max(args.conc)),
           "--ctx", str(args.ctx), "--max-queue", "1024"] + args.weft_args.split()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_ready(port, proc)
    return proc, port


def launch_llama(binary, threads, slots, ctx):
    """llama-server on a free loopback port: `slots` slots of `ctx` tokens
    each, continuous batching; (process, port) once it answers /health."""
    port = free_port()
    cmd = [binary, "-m", model_path(), "--host", "127.0.0.1", "--port", str(port), "-t", str(threads),
           "-tb", str(threads), "-np", str(slots), "-c", str(slots * ctx), "-cb", "--no-webui",
           "--log-disable"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_ready(port, proc)
    return proc, port


def start_llama(binary, args):
    return launch_llama(binary, args.threads, max(args.conc), args.ctx)


def stream_request(port, prompt, max_tokens):
    """One streamed completion; returns (t_first - t0, t_last - t0, chunks with text)."""
    body = json.dumps({"model": "m", "prompt": prompt, "max_tokens": max_tokens, "temperature": 0,
                       "ignore_eos": True, "stream": True})
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    t0 = time.perf_counter()
    c.request("POST", "/v1/completions", body=body, headers={"Content-Type": "application/json"})
    r = c.getresponse()
    if r.status != 200:
        raise RuntimeError(f"status {r.status}: {r.read()[:200]!r}")
    t_first = t_last = None
    n = 0
    for raw in r:
        line = raw.decode("utf-8", "replace").strip()
        if not line.startswith("data: "):
            continue
        if line == "data: [DONE]":
            break
        ch = json.loads(line[6:])
        if ch.get("choices") and ch["choices"][0].get("text"):
            now = time.perf_counter()
            t_first = t_first or now
            t_last = now
            n += 1
    c.close()
    return (t_first or time.perf_counter()) - t0, (t_last or time.perf_counter()) - t0, n


def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(p * (len(v) - 1) + 0.5))] if v else 0.0


def run_level(port, plist, conc, max_tokens):
    """len(plist) requests, conc at a time; returns the summary dict."""
    lock = threading.Lock()
    todo = list(enumerate(plist))
    res, errors = [], []

    def worker():
        while True:
            with lock:
                if not todo:
                    return
                i, p = todo.pop(0)
            try:
                res.append(stream_request(port, p, max_tokens))
            except Exception as e:
                errors.append(repr(e))

    t0 = time.perf_counter()
    ts = [threading.Thread(target=worker) for _ in range(conc)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    wall = time.perf_counter() - t0
    ttft = [r[0] for r in res]
    tpot = [(r[1] - r[0]) / (max_tokens - 1) for r in res]
    gen = len(res) * max_tokens
    return {"concurrency": conc, "requests": len(plist), "ok": len(res), "errors": errors[:3],
            "wall_s": round(wall, 3), "gen_tokens": gen, "gen_tps": round(gen / wall, 2),
            "chunks_min": min((r[2] for r in res), default=0),
            "ttft_p50": round(pct(ttft, 0.5), 4), "ttft_p99": round(pct(ttft, 0.99), 4),
            "tpot_p50": round(pct(tpot, 0.5), 4), "tpot_p99": round(pct(tpot, 0.99), 4)}


def bench_server(name, start, binary, args, plist):
    proc, port = start(binary, args)
    out = {}
    try:
        stream_request(port, plist[0], 8)  # warm-up
        for c in args.conc:
            n = max(args.min_requests, 2 * c)
            r = run_level(port, plist[:n], c, args.max_tokens)
            out[str(c)] = r
            print(f"  {name:5s} c={c:3d}: {r['gen_tps']:7.1f} tok/s  TTFT p50 {r['ttft_p50'] * 1e3:7.1f} ms "
                  f"p99 {r['ttft_p99'] * 1e3:7.1f} ms  TPOT p50 {r['tpot_p50'] * 1e3:6.1f} ms "
                  f"p99 {r['tpot_p99'] * 1e3:6.1f} ms  ({r['ok']}/{r['requests']} ok)", flush=True)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--concurrency", default="1,8,32")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--min-requests", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--ctx", type=int, default=2048, help="context per request (both servers)")
    ap.add_argument("--weft", default=os.path.join(root, "build", "weft"))
    ap.add_argument("--llama-server", default=os.path.join(
        os.environ.get("WEFT_LLAMA_SERVER_DIR", os.path.expanduser("~/.cache/weft/llama-server")),
        "bin", "llama-server"))
    ap.add_argument("--data", default=os.environ.get("WEFT_DATA_DIR", os.path.join(root, "..", "shared", "data")))
    ap.add_argument("--no-save", action="store_true")
    ap.add_argument("--weft-args", default="", help="extra options for weft serve, e.g. '--prefill-cap 0'")
    args = ap.parse_args()
    args.conc = [int(x) for x in args.concurrency.split(",")]
    for path, what in ((args.weft, "build/weft (build first)"),
                       (args.llama_server, "llama-server (scripts/setup.sh --reference)"),
                       (model_path(), "the model (scripts/setup.sh)")):
        if not os.path.exists(path):
            sys.exit(f"bench/server.py: no {what} at {path}")
    plist = prompts(args.data, max(max(args.min_requests, 2 * c) for c in args.conc))
    print(f"bench/server.py: {len(plist)} prompts, {args.max_tokens} tokens each, threads {args.threads}, "
          f"concurrency {args.conc}", flush=True)
    weft = bench_server("weft", start_weft, args.weft, args, plist)
    llama = bench_server("llama", start_llama, args.llama_server, args, plist)
    ratios = {}
    for c in map(str, args.conc):
        w, l_ = weft[c], llama[c]
        ratios[c] = {"throughput": round(w["gen_tps"] / l_["gen_tps"], 3) if l_["gen_tps"] else None,
                     "tpot_p99_llama_over_weft": round(l_["tpot_p99"] / w["tpot_p99"], 3) if w["tpot_p99"] else None,
                     "ttft_p50_llama_over_weft": round(l_["ttft_p50"] / w["ttft_p50"], 3) if w["ttft_p50"] else None}
        print(f"  c={c:>3s}: throughput weft/llama {ratios[c]['throughput']}x, "
              f"TPOT p99 llama/weft {ratios[c]['tpot_p99_llama_over_weft']}x "
              f"(>1: weft faster), TTFT p50 llama/weft {ratios[c]['ttft_p50_llama_over_weft']}x")
    rec = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "threads": args.threads,
           "max_tokens": args.max_tokens, "ctx": args.ctx, "model": os.path.basename(model_path()),
           "llama_server": "llama.cpp from llama-cpp-python 0.3.16", "weft": weft, "llama": llama,
           "ratios": ratios, "load1": os.getloadavg()[0]}
    if not args.no_save:
        os.makedirs(os.path.join(here, "results"), exist_ok=True)
        with open(os.path.join(here, "results", "server.jsonl"), "a") as f:
            f.write(json.dumps(rec) + "\n")


if __name__ == "__main__":
    main()
