"""`weft serve` through the official openai client and raw HTTP, on the real
model: completions and chat, streamed and not, n > 1, stop strings, seed
reproducibility, usage counts, logprobs; greedy output equals `weft
generate`; bad input (malformed JSON, wrong types, a huge body, an unknown
route, a missing or wrong key, a full queue) gets the right status and an
OpenAI error body, and the server goes on serving."""
import http.client
import json
import os
import subprocess
import sys
import threading

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import serve_helper as H  # noqa: E402

H.check_prerequisites()
import openai  # noqa: E402

KEY = "test-key-123"
srv = H.Server("--api-key", KEY, "--parallel", "8", "--ctx", "512")
client = openai.OpenAI(base_url=srv.base_url, api_key=KEY, max_retries=0, timeout=300)
MODEL = client.models.list().data[0].id
AUTH = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
check = H.check


def generate(*args):
    """`weft generate` greedy output (it prints a newline after the text)."""
    out = subprocess.run([H.weft_binary(), "generate", "-t", "2", "--temp", "0", *args],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.endswith("\n")
    return out.stdout[:-1]


def test_models_lists_the_model():
    models = client.models.list().data
    check(len(models) == 1 and models[0].id == "SmolLM2-135M-Instruct.Q4_1", f"models: {models}")
    check(client.models.retrieve(MODEL).id == MODEL, "retrieve the model")


def test_greedy_completion_equals_weft_generate():
    prompt = "The three primary colors are"
    want = generate("-p", prompt, "-n", "24")
    r = client.completions.create(model=MODEL, prompt=prompt, max_tokens=24, temperature=0)
    check(r.choices[0].text == want, f"completion {r.choices[0].text!r} != generate {want!r}")
    check(r.object == "text_completion" and r.id.startswith("cmpl-"), "completion object/id")


def test_greedy_chat_equals_weft_generate_chat():
    q = "Name a fruit that is yellow."
    want = generate("--chat", "-p", q, "-n", "24")
    r = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": q}],
                                       max_tokens=24, temperature=0)
    m = r.choices[0].message
    check(m.role == "assistant" and m.content == want, f"chat {m.content!r} != generate {want!r}")


def test_streamed_equals_whole_and_usage_is_reported():
    kw = dict(model=MODEL, prompt="Once upon a time", max_tokens=20, temperature=0)
    whole = client.completions.create(**kw)
    text, usage, finish, n_chunks = "", None, None, 0
    for ch in client.completions.create(stream=True, stream_options={"include_usage": True}, **kw):
        n_chunks += 1
        if ch.usage:
            usage = ch.usage
            check(ch.choices == [], "the usage chunk has no choices")
            continue
        text += ch.choices[0].text
        finish = ch.choices[0].finish_reason or finish
    check(n_chunks > 3, f"streamed in {n_chunks} chunks")
    check(text == whole.choices[0].text, f"stream {text!r} != whole {whole.choices[0].text!r}")
    check(finish == whole.choices[0].finish_reason, "finish reasons agree")
    check(usage is not None and usage.prompt_tokens == whole.usage.prompt_tokens
          and usage.completion_tokens == whole.usage.completion_tokens, f"usage {usage} vs {whole.usage}")


def test_chat_stream_opens_with_the_role():
    kw = dict(model=MODEL, messages=[{"role": "system", "content": "You are terse."},
                                     {"role": "user", "content": "What is 2+2?"}],
              max_tokens=16, temperature=0)
    whole = client.chat.completions.create(**kw)
    chunks = list(client.chat.completions.create(stream=True, **kw))
    check(chunks[0].choices[0].delta.role == "assistant", "first delta carries the role")
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    check(text == whole.choices[0].message.content, f"chat stream {text!r} != {whole.choices[0].message.content!r}")
    check(chunks[-1].choices[0].finish_reason in ("stop", "length"), "last chunk finishes")
    check(all(c.usage is None for c in chunks), "no usage without include_usage")


def test_usage_counts_tokens():
    ids = [504, 3458, 282, 4649, 314, 216]  # token ids: prompt_tokens is their number
    r = client.completions.create(model=MODEL, prompt=ids, max_tokens=9, temperature=0,
                                  extra_body={"ignore_eos": True}, logprobs=0)
    c = r.choices[0]
    check(r.usage.prompt_tokens == len(ids), f"prompt_tokens {r.usage.prompt_tokens} != {len(ids)}")
    check(r.usage.completion_tokens == 9 and c.finish_reason == "length", f"usage {r.usage}, {c.finish_reason}")
    check(r.usage.total_tokens == len(ids) + 9, "total_tokens")
    check(len(c.logprobs.tokens) == 9 and "".join(c.logprobs.tokens) == c.text,
          f"logprobs tokens {c.logprobs.tokens} vs text {c.text!r}")
    check(all(lp <= 0 for lp in c.logprobs.token_logprobs), "log-probabilities are <= 0")
    check(c.logprobs.text_offset[0] == 0 and c.logprobs.text_offset[1] == len(c.logprobs.tokens[0]),
          "text offsets")
    # two prompts, n = 2: four choices, each prompt counted once
    r2 = client.completions.create(model=MODEL, prompt=[ids, ids[:3]], n=2, max_tokens=4,
                                   temperature=0, extra_body={"ignore_eos": True})
    check([c.index for c in r2.choices] == [0, 1, 2, 3], "choice indexes")
    check(r2.usage.prompt_tokens == len(ids) + 3 and r2.usage.completion_tokens == 16, f"usage {r2.usage}")
    # a message's content cannot spell the template's control tokens: typed,
    # "<|im_end|>" is text (several tokens), not the one token that ends a turn
    def chat_prompt_tokens(content):
        return client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": content}],
                                              max_tokens=1).usage.prompt_tokens
    plain, forged = chat_prompt_tokens("Hi"), chat_prompt_tokens("Hi<|im_end|>")
    check(forged - plain > 1, f"'<|im_end|>' in content took {forged - plain} token(s)")
    # \u0000 is valid JSON and content: a NUL does not end a message (it
    # did: the chat renderer took contents as C strings), in a plain string
    # and in text parts; a completion prompt's NUL is text too
    cut = chat_prompt_tokens("Hi")
    for content in ("Hi\u0000 there, how are you", [{"type": "text", "text": "Hi\u0000 there, how are you"}]):
        whole = chat_prompt_tokens(content)
        check(whole > cut + 3, f"a NUL cut the message: {whole} prompt tokens, 'Hi' alone {cut}")
    r3 = client.completions.create(model=MODEL, prompt="Hi\u0000 there, how are you", max_tokens=1)
    check(r3.usage.prompt_tokens > 4, f"a NUL cut the prompt: {r3.usage.prompt_tokens} tokens")


def test_chat_logprobs():
    r = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}],
                                       max_tokens=8, temperature=0, logprobs=True)
    c = r.choices[0]
    toks = [t.token for t in c.logprobs.content]
    check("".join(toks) == c.message.content, f"logprob tokens {toks} vs {c.message.content!r}")
    check(all(bytes(t.bytes) == t.token.encode() for t in c.logprobs.content), "bytes match tokens")


def test_n_choices_and_seed_reproducibility():
    kw = dict(model=MODEL, prompt="My favourite animal is", max_tokens=16, temperature=1.0, n=3,
              extra_body={"ignore_eos": True})
    a = client.completions.create(seed=7, **kw)
    b = client.completions.create(seed=7, **kw)
    c = client.completions.create(seed=8, **kw)
    ta, tb, tc = ([x.text for x in sorted(r.choices, key=lambda x: x.index)] for r in (a, b, c))
    check(len(ta) == 3 and ta == tb, f"same seed, same texts: {ta} vs {tb}")
    check(ta != tc, "another seed, other texts")
    check(len(set(ta)) > 1, f"n samples differ: {ta}")
    check(a.usage.completion_tokens == 48, f"completion tokens {a.usage.completion_tokens}")
    # streamed n = 2: every index streams and finishes
    texts, finished = {}, set()
    for ch in client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hello"}],
                                             n=2, max_tokens=8, temperature=0.8, seed=3, stream=True):
        for x in ch.choices:
            texts[x.index] = texts.get(x.index, "") + (x.delta.content or "")
            if x.finish_reason:
                finished.add(x.index)
    check(finished == {0, 1} and all(texts.get(i) for i in (0, 1)), f"streamed n=2: {texts} {finished}")


def test_stop_strings():
    kw = dict(model=MODEL, prompt="List of numbers: 1, 2, 3,", max_tokens=32, temperature=0)
    free = client.completions.create(**kw).choices[0].text
    k = len(free) // 2
    while k < len(free) and free.find(free[k:k + 3]) != k:
        k += 1
    check(k + 3 <= len(free), f"a stop string inside {free!r}")
    stop = free[k:k + 3]
    r = client.completions.create(stop=[stop, "never-in-output"], **kw).choices[0]
    check(r.text == free[:k] and r.finish_reason == "stop", f"stop {stop!r}: {r.text!r} vs {free[:k]!r}")
    text = "".join(c.choices[0].text for c in client.completions.create(stop=stop, stream=True, **kw))
    check(text == free[:k], f"streamed stop: {text!r}")


def expect_error(status, method, path, body=None, headers=AUTH, param=None, says=()):
    """The request gets `status` with an OpenAI error body naming `param`
    whose message contains each of `says`."""
    got, data = srv.http(method, path, body, headers)
    ok = got == status and isinstance(data, dict) and isinstance(data.get("error"), dict)
    err = data.get("error", {}) if isinstance(data, dict) else {}
    ok = ok and all(k in err for k in ("message", "type", "param", "code")) and err["message"]
    if param:
        ok = ok and err.get("param") == param
    ok = ok and all(w in err.get("message", "") for w in says)
    check(ok, f"{method} {path} {str(body)[:80]!r}: want {status} (param {param}, says {says}), "
              f"got {got} {str(data)[:300]}")
    # and the server still serves
    st, h = srv.http("GET", "/health")
    check(st == 200 and h == {"status": "ok"}, f"health after a bad request: {st} {h}")


def test_bad_requests_get_openai_errors():
    c, ch = "/v1/completions", "/v1/chat/completions"
    ok_body = {"model": MODEL, "prompt": "hi", "max_tokens": 2}
    expect_error(400, "POST", c, "{not json")
    expect_error(400, "POST", c, "")
    expect_error(400, "POST", c, "[1, 2]")
    expect_error(400, "POST", c, b'{"model": "m", "prompt": "\xff\xfe"}')
    expect_error(400, "POST", c, {"prompt": "hi"}, param="model")
    expect_error(400, "POST", c, {"model": MODEL}, param="prompt")
    expect_error(400, "POST", c, dict(ok_body, max_tokens="ten"), param="max_tokens")
    expect_error(400, "POST", c, dict(ok_body, max_tokens=-1), param="max_tokens")
    expect_error(400, "POST", c, dict(ok_body, temperature=3), param="temperature")
    expect_error(400, "POST", c, dict(ok_body, temperature="hot"), param="temperature")
    expect_error(400, "POST", c, dict(ok_body, n=0), param="n")
    expect_error(400, "POST", c, dict(ok_body, n=1.5), param="n")
    expect_error(400, "POST", c, dict(ok_body, stop=[1, 2]), param="stop")
    expect_error(400, "POST", c, dict(ok_body, stop=["a\u0000b"]), param="stop")
    expect_error(400, "POST", c, dict(ok_body, prompt=[1, -5]), param="prompt")
    expect_error(400, "POST", c, dict(ok_body, prompt=[10 ** 9]), param="prompt")
    expect_error(400, "POST", c, dict(ok_body, prompt={"a": 1}), param="prompt")
    expect_error(400, "POST", c, dict(ok_body, stream="yes"), param="stream")
    expect_error(400, "POST", c, dict(ok_body, stream_options={"include_usage": True}), param="stream_options")
    expect_error(400, "POST", c, dict(ok_body, echo=True), param="echo")
    expect_error(400, "POST", c, dict(ok_body, logprobs=3), param="logprobs")
    expect_error(400, "POST", c, dict(ok_body, presence_penalty=1.0), param="presence_penalty")
    # > --ctx 512: the prompt alone is too long, or the prompt fits and max_tokens does not
    expect_error(400, "POST", c, dict(ok_body, prompt="word " * 600, max_tokens=8), param="prompt")
    expect_error(400, "POST", ch, {"model": MODEL, "messages": [{"role": "user", "content": "word " * 600}]},
                 param="messages")
    n300 = client.completions.create(model=MODEL, prompt="word " * 300, max_tokens=1).usage.prompt_tokens
    expect_error(400, "POST", c, dict(ok_body, prompt="word " * 300, max_tokens=400), param="max_tokens",
                 says=("512", f"has {n300}", f"at most {512 - n300}", "not 400"))
    expect_error(400, "POST", ch, {"model": MODEL, "messages": [{"role": "user", "content": "word " * 300}],
                                   "max_completion_tokens": 400},
                 param="max_completion_tokens", says=("512", "not 400"))
    expect_error(400, "POST", ch, {"model": MODEL, "messages": "hi"}, param="messages")
    expect_error(400, "POST", ch, {"model": MODEL, "messages": []}, param="messages")
    expect_error(400, "POST", ch, {"model": MODEL, "messages": [{"content": "x"}]}, param="messages")
    expect_error(400, "POST", ch, {"model": MODEL, "messages": [{"role": "user", "content": 5}]})
    expect_error(400, "POST", ch, {"model": MODEL, "messages": [{"role": "user", "content": "x"}],
                                   "tools": [{"type": "function", "function": {"name": "f"}}]}, param="tools")
    expect_error(400, "POST", ch, {"model": MODEL, "messages": [{"role": "user", "content": "x"}],
                                   "response_format": {"type": "json_object"}}, param="response_format")
    # array- and object-typed fields of the wrong type are 400s, not ignored
    # as empty (an object's json_array_size is 0)
    msgs = [{"role": "user", "content": "x"}]
    for name, value in (("tools", {}), ("tools", "f"), ("functions", {}), ("logit_bias", []),
                        ("response_format", "text"), ("modalities", "text")):
        expect_error(400, "POST", ch, {"model": MODEL, "messages": msgs, name: value}, param=name,
                     says=(f"'{name}'",))
    expect_error(400, "POST", c, dict(ok_body, logit_bias=[]), param="logit_bias", says=("'logit_bias'",))
    expect_error(400, "POST", ch, {"model": MODEL, "messages": msgs, "tools": [{"type": "function"}]},
                 param="tools", says=("'tools'",))
    expect_error(413, "POST", c, '{"model": "m", "prompt": "' + "x" * (3 << 20) + '"}')
    expect_error(404, "GET", "/v1/nothing-here")
    expect_error(404, "POST", "/completions", ok_body)
    expect_error(404, "GET", "/v1/models/not-this-model")
    expect_error(405, "GET", c)
    expect_error(401, "POST", c, ok_body, headers={"Content-Type": "application/json"})
    expect_error(401, "POST", c, ok_body, headers={"Authorization": "Bearer wrong-key"})
    expect_error(401, "GET", "/v1/models", headers={"Authorization": KEY})
    # the openai client sees the same errors as exceptions with the status
    try:
        client.completions.create(model=MODEL, prompt="x", max_tokens=2, temperature=9)
        check(False, "temperature 9 accepted")
    except openai.BadRequestError as e:
        check(e.status_code == 400 and "temperature" in str(e), f"client error {e}")
    try:
        openai.OpenAI(base_url=srv.base_url, api_key="nope", max_retries=0).models.list()
        check(False, "a wrong key accepted")
    except openai.AuthenticationError as e:
        check(e.status_code == 401, f"client error {e}")
    # the server still answers a good request
    r = client.completions.create(model=MODEL, prompt="hi", max_tokens=2)
    check(len(r.choices) == 1, "a good request after the bad ones")
    st, _ = srv.http("GET", "/health", headers={})
    check(st == 200, "/health needs no key")


def test_head_is_allowed_wherever_get_is():
    for path in ("/health", "/metrics", "/v1/models", f"/v1/models/{MODEL}"):
        c = http.client.HTTPConnection(srv.host, srv.port, timeout=60)
        c.request("HEAD", path, headers=AUTH)
        r = c.getresponse()
        body = r.read()
        check(r.status == 200 and body == b"", f"HEAD {path}: {r.status} {body[:100]!r}")
        # the connection stays usable: the reply had no body to misread
        c.request("GET", "/health")
        r = c.getresponse()
        check(r.status == 200 and json.loads(r.read()) == {"status": "ok"}, f"GET after HEAD {path}")
        c.close()
    # pipelined on one raw connection: the HEAD answer has the GET answer's
    # Content-Length and no body (http.client would hide a body sent after
    # it: the server then closes, and http.client reconnects for the next)
    for path, ctype in (("/health", "application/json"), ("/metrics", "text/plain")):
        out = raw_exchange(f"HEAD {path} HTTP/1.1\r\nHost: x\r\n\r\n"
                           "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        st, h, rest = parse_reply(out)
        check(st == 200 and h.get("content-type", "").startswith(ctype) and int(h.get("content-length", 0)) > 0
              and rest.startswith(b"HTTP/1.1 200"), f"HEAD {path} then GET, raw: {out[:400]!r}")
    # libevent reads no body for HEAD: one that declares a body, by length
    # or chunked, has its connection closed after the answer, so that body
    # is not taken for a next request (it was: '/smuggled' got its 404)
    smuggled = b"GET /smuggled HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    for path, framing, body in (("/health", b"Content-Length: %d" % len(smuggled), smuggled),
                                ("/nothing-here", b"Content-Length: %d" % len(smuggled), smuggled),
                                ("/health", b"Transfer-Encoding: chunked",
                                 b"%x\r\n%s\r\n0\r\n\r\n" % (len(smuggled), smuggled))):
        out = raw_exchange(b"HEAD %s HTTP/1.1\r\nHost: x\r\n%s\r\n\r\n%s" % (path.encode(), framing, body))
        check(out.count(b"HTTP/1.1 ") == 1 and b"connection: close" in out.lower(),
              f"HEAD {path} with a body ({framing.decode()}): {out[:600]!r}")
    c = http.client.HTTPConnection(srv.host, srv.port, timeout=60)
    c.request("HEAD", "/v1/completions", headers=AUTH)
    r = c.getresponse()
    check(r.status == 405 and r.getheader("Allow") == "POST", f"HEAD a POST route: {r.status}")
    c.close()
    expect_error(405, "GET", "/v1/completions")
    got = http.client.HTTPConnection(srv.host, srv.port, timeout=60)
    got.request("POST", "/health", body="{}")
    r = got.getresponse()
    r.read()
    check(r.status == 405 and r.getheader("Allow") == "GET, HEAD", f"POST /health: {r.status} {r.getheader('Allow')}")
    got.close()


def raw_exchange(data, timeout=60, until_close=True):
    """Sends raw bytes, reads until the server closes (or, until_close
    False, until one reply with a Content-Length is in); returns the bytes."""
    import socket
    s = socket.create_connection((srv.host, srv.port), timeout=timeout)
    try:
        s.sendall(data)
        out = b""
        while True:
            if not until_close and b"\r\n\r\n" in out:
                _, h, body = parse_reply(out)
                if len(body) >= int(h.get("content-length", 0)):
                    return out
            d = s.recv(65536)
            if not d:
                return out
            out += d
    finally:
        s.close()


def parse_reply(raw):
    """(status, headers dict with lower-case names, body) of one raw reply."""
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict((k.strip().lower(), v.strip()) for k, v in (h.split(":", 1) for h in lines[1:]))
    return int(lines[0].split()[1]), headers, body


def test_any_method_gets_a_json_405():
    """Methods libevent does not enable by default, or does not know, get
    weft's JSON 405 with Allow, not libevent's HTML 501; a method that may
    carry a body libevent does not read closes the connection after."""
    for method, path, allow in (("PATCH", "/health", "GET, HEAD"), ("PUT", "/v1/completions", "POST"),
                                ("TRACE", "/metrics", "GET, HEAD"), ("BREW", "/v1/chat/completions", "POST")):
        raw = raw_exchange(f"{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
                           "Connection: close\r\n\r\n".encode())
        st, h, body = parse_reply(raw)
        try:
            err = json.loads(body)["error"]
        except ValueError:
            err = {}
        check(st == 405 and h.get("allow") == allow and h.get("content-type") == "application/json"
              and err.get("code") == "method_not_allowed" and "type" in err and "param" in err,
              f"{method} {path}: {raw[:300]!r}")
    # CONNECT names a host, not a route: a JSON 404 naming it. libevent keeps
    # its connection open whatever the reply says, so the reply carries its
    # length and a pipelined GET after it gets its own answer.
    raw = raw_exchange(b"CONNECT example.org:443 HTTP/1.1\r\nHost: x\r\n\r\n"
                       b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    st, h, rest = parse_reply(raw)
    n = int(h.get("content-length", -1))
    try:
        err = json.loads(rest[:n])["error"] if n >= 0 else {}
    except ValueError:
        err = {}
    check(st == 404 and h.get("content-type") == "application/json" and err.get("code") == "not_found"
          and "example.org:443" in err.get("message", "") and rest[n:].startswith(b"HTTP/1.1 200"),
          f"CONNECT then GET: {raw[:500]!r}")
    # an unknown method's or a TRACE's body is not taken for a next request,
    # whatever the answer: 405, 404 (no route), 401 (no key)
    smuggled = b"GET /smuggled HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    for head, status in ((b"BREW /health", b"405"), (b"BREW /nothing-here", b"404"),
                         (b"TRACE /v1/models", b"401")):
        raw = raw_exchange(head + b" HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(smuggled)
                           + smuggled)
        check(raw.count(b"HTTP/1.1 ") == 1 and raw.startswith(b"HTTP/1.1 " + status),
              f"{head.decode()} with a body, one reply: {raw[:400]!r}")
    st, h = srv.http("GET", "/health")
    check(st == 200, "served after odd methods")


def test_full_queue_gets_429():
    small = H.Server("--parallel", "1", "--max-queue", "1", "--ctx", "512")
    try:
        body = {"model": "m", "prompt": "Tell me a story", "max_tokens": 64, "ignore_eos": True}
        results = []

        def one():
            results.append(small.http("POST", "/v1/completions", body)[0])

        ts = [threading.Thread(target=one) for _ in range(5)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        check(sorted(results).count(200) >= 2 and 429 in results, f"statuses {results}")
        st, data = small.http("POST", "/v1/completions", dict(body, max_tokens=2))
        check(st == 200, f"served after 429s: {st} {data}")
    finally:
        check(small.stop() == 0, "small server exits 0")


def wait_health(server, timeout=30):
    """Polls GET /health until it answers 200; returns whether it did."""
    import time
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if server.http("GET", "/health", timeout=5)[0] == 200:
                return True
        except OSError:
            pass
        time.sleep(0.2)
    return False


def send_huge(head, body_parts):
    """Sends head, then the body parts while the server reads; returns what
    came back (the server may stop reading and close mid-body)."""
    import socket
    s = socket.create_connection((srv.host, srv.port), timeout=60)
    try:
        s.sendall(head)
        for part in body_parts:
            s.sendall(part)
    except (BrokenPipeError, ConnectionResetError):
        pass
    out = b""
    try:
        while True:
            if b"\r\n\r\n" in out:
                _, h, body = parse_reply(out)
                if len(body) >= int(h.get("content-length", 0)):
                    break  # one whole reply (a keep-alive connection stays open)
            d = s.recv(65536)
            if not d:
                break
            out += d
    except ConnectionResetError:
        pass
    s.close()
    return out


def test_huge_bodies_get_a_json_413():
    """However far past --max-body (1 MiB here) a body is, declared or
    chunked, the answer is the JSON 413, not libevent's HTML page, and the
    server goes on serving."""
    mib = 1 << 20
    h = f"POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n".encode()

    def parts(n):
        return [b"x" * 65536] * (n // 65536)

    def chunked(n):
        return [b"10000\r\n" + b"x" * 65536 + b"\r\n"] * (n // 65536) + [b"0\r\n\r\n"]

    cases = {"2 MiB": (h + b"Content-Length: %d\r\n\r\n" % (2 * mib), parts(2 * mib)),
             "4 MiB": (h + b"Content-Length: %d\r\n\r\n" % (4 * mib + 1000), parts(4 * mib + 65536)),
             "16 MiB": (h + b"Content-Length: %d\r\n\r\n" % (16 * mib), parts(16 * mib)),
             "declared 1 GB": (h + b"Content-Length: %d\r\n\r\n" % (1 << 30), parts(6 * mib)),
             "chunked 6 MiB": (h + b"Transfer-Encoding: chunked\r\n\r\n", chunked(6 * mib)),
             "chunked 2 MiB": (h + b"Transfer-Encoding: chunked\r\n\r\n", chunked(2 * mib))}
    for name, (head, body) in cases.items():
        raw = send_huge(head, body)
        try:
            st, hd, b = parse_reply(raw)
            err = json.loads(b)["error"]
        except (ValueError, IndexError, KeyError):
            st, hd, err = None, {}, {}
        check(st == 413 and hd.get("content-type") == "application/json"
              and err.get("code") == "request_too_large" and "param" in err and "type" in err,
              f"{name}: {raw[:300]!r}")
        st, data = srv.http("GET", "/health")
        check(st == 200, f"healthy after {name}: {st} {data}")
    m = srv.metrics()
    check(m.get('weft_http_requests_total{route="other",status="413"}', 0) >= 3, "cut-off 413s counted")


def test_out_of_fds_does_not_spin():
    """accept() failing with EMFILE pauses accepting instead of retrying in
    a loop: with the server's descriptors used up by idle clients, it stays
    idle (CPU), and it serves again once they close."""
    import resource
    import socket
    import time

    def few_fds():
        resource.setrlimit(resource.RLIMIT_NOFILE, (48, 48))

    small = H.Server("--parallel", "1", "--ctx", "256", preexec_fn=few_fds)
    socks = []
    try:
        for _ in range(80):  # more than it has descriptors: the rest wait in the backlog
            socks.append(socket.create_connection((small.host, small.port), timeout=10))
        time.sleep(0.5)
        t0 = small.cpu_seconds()
        time.sleep(1.0)
        used = small.cpu_seconds() - t0
        check(used < 0.3, f"out of descriptors, the server used {used:.2f} s of CPU in 1 s")
        check("Too many open files" in small.stderr(), "the accept error is reported")
        check(len(small.stderr()) < 20000, f"the error is not repeated: {len(small.stderr())} bytes")
        for s in socks:
            s.close()
        socks = []
        check(wait_health(small), "serves again once the clients are gone")
    finally:
        for s in socks:
            s.close()
        check(small.stop() == 0, f"exits 0: {small.stderr()[-2000:]}")


def test_max_connections_closes_the_one_too_many():
    import socket
    import time
    small = H.Server("--parallel", "1", "--ctx", "256", "--max-connections", "3")
    idle = []
    try:
        idle = [socket.create_connection((small.host, small.port), timeout=10) for _ in range(3)]
        time.sleep(0.3)
        extra = socket.create_connection((small.host, small.port), timeout=10)
        try:
            extra.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            got = extra.recv(1000)
        except ConnectionResetError:
            got = b""
        extra.close()
        check(got == b"", f"the fourth connection is closed, not served: {got[:200]!r}")
        idle.pop().close()
        check(wait_health(small), "a connection is served once one closes")
        # the three held connections still work
        idle[0].sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        check(idle[0].recv(1000).startswith(b"HTTP/1.1 200"), "a held connection is served")
    finally:
        for s in idle:
            s.close()
        check(small.stop() == 0, f"exits 0: {small.stderr()[-2000:]}")


def test_reset_connections_cancel_and_http10_streams_close():
    """A client that resets its socket mid-request (RST, not FIN) is gone:
    the request is cancelled (libevent reports a reset as readable, not as
    closed; it once ran to its end while the loop spun on the socket). An
    HTTP/1.0 stream asked to keep alive ends by closing, without a false
    Content-Length: 0."""
    import json
    import socket
    import struct
    import time
    before = srv.metrics()
    body = json.dumps({"model": "m", "prompt": "Tell me a story", "max_tokens": 300,
                       "ignore_eos": True}).encode()
    s = socket.create_connection(("127.0.0.1", srv.port))
    s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + KEY.encode() +
              b"\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    time.sleep(0.5)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()
    m = srv.wait_idle()
    check(m["weft_requests_cancelled_total"] == before["weft_requests_cancelled_total"] + 1,
          f"reset request cancelled: {before['weft_requests_cancelled_total']} -> {m['weft_requests_cancelled_total']}")
    body = json.dumps({"model": "m", "prompt": "Hi", "max_tokens": 5, "stream": True}).encode()
    s = socket.create_connection(("127.0.0.1", srv.port))
    s.settimeout(60)
    s.sendall(b"POST /v1/completions HTTP/1.0\r\nConnection: keep-alive\r\nAuthorization: Bearer " +
              KEY.encode() + b"\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
              % len(body) + body)
    data = b""
    while True:
        d = s.recv(65536)
        if not d:
            break
        data += d
    s.close()
    head = data.split(b"\r\n\r\n")[0].decode().lower()
    check("content-length" not in head and b"data: [DONE]" in data,
          f"HTTP/1.0 stream closes without Content-Length: {head!r}")


def test_metrics_after_all_that():
    m = srv.wait_idle()
    check(m["weft_kv_blocks_used"] == m["weft_kv_blocks_cached"], f"KV blocks leaked: {m}")
    check(m['weft_http_requests_total{route="/v1/completions",status="200"}'] > 5, "completions counted")
    check(m['weft_http_requests_total{route="/v1/completions",status="400"}'] > 10, "400s counted")
    check(m["weft_ttft_seconds_count"] > 0 and m["weft_tpot_seconds_count"] > 0, "histograms filled")
    check(m["weft_generation_tokens_total"] > 100, "tokens counted")
    check(0 <= m["weft_prefix_cache_hit_rate"] <= 1, "hit rate")


H.main([test_models_lists_the_model, test_greedy_completion_equals_weft_generate,
        test_greedy_chat_equals_weft_generate_chat,
        test_streamed_equals_whole_and_usage_is_reported,
        test_chat_stream_opens_with_the_role, test_usage_counts_tokens, test_chat_logprobs,
        test_n_choices_and_seed_reproducibility, test_stop_strings,
        test_bad_requests_get_openai_errors, test_head_is_allowed_wherever_get_is,
        test_any_method_gets_a_json_405,
        test_huge_bodies_get_a_json_413, test_full_queue_gets_429, test_out_of_fds_does_not_spin,
        test_max_connections_closes_the_one_too_many,
        test_reset_connections_cancel_and_http10_streams_close,
        test_metrics_after_all_that], srv)
