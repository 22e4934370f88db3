"""Helpers for the tests of `weft serve` (tests/model/test_serve_*.py): find
the model and the binary (skip with 77 when the model is absent, unless
WEFT_REQUIRE_MODEL=1), start a real server on a free loopback port, talk raw
HTTP to it, read its /metrics."""
import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time

SKIP = 77


def require(cond, why):
    """Skip (77) when cond is false, or fail when WEFT_REQUIRE_MODEL=1."""
    if cond:
        return
    print(f"skip: {why}", file=sys.stderr)
    sys.exit(1 if os.environ.get("WEFT_REQUIRE_MODEL") == "1" else SKIP)


def model_path():
    if os.environ.get("WEFT_MODEL"):
        return os.environ["WEFT_MODEL"]
    d = os.environ.get("WEFT_MODEL_DIR") or os.path.expanduser("~/.cache/weft/models")
    return os.path.join(d, "SmolLM2-135M-Instruct.Q4_1.gguf")


def weft_binary():
    return os.path.join(os.environ.get("WEFT_BINARY_DIR", "build"), "weft")


def check_prerequisites(need_openai=True):
    require(os.path.exists(model_path()), f"model {model_path()} not found (run scripts/setup.sh)")
    if need_openai:
        try:
            import openai  # noqa: F401
        except ImportError:
            require(False, "the openai package is not installed (run scripts/setup.sh)")


class Server:
    """`weft serve --port 0 ARGS` (the port it prints is read back); stderr
    is collected so a failing test can show it."""

    def __init__(self, *args, timeout=120, preexec_fn=None):
        cmd = [weft_binary(), "serve", "--port", "0", "-t", "2", *args]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     preexec_fn=preexec_fn)
        self.err = []
        threading.Thread(target=self._drain_err, daemon=True).start()
        deadline = time.time() + timeout
        line = ""
        while time.time() < deadline:
            line = self.proc.stdout.readline()
            if "listening on" in line or not line:
                break
        if "listening on" not in line:
            self.proc.kill()
            raise RuntimeError("server did not start: " + "".join(self.err[-20:]))
        addr = line.split("http://")[1].split()[0]
        self.host, port = addr.rsplit(":", 1)
        self.port = int(port)
        self.base_url = f"http://{self.host}:{self.port}/v1"

    def _drain_err(self):
        for line in self.proc.stderr:
            self.err.append(line)

    def stop(self, sig=signal.SIGTERM, timeout=120):
        """Signals the server; returns its exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return -9

    def cpu_seconds(self):
        """User + system CPU time the server has used (/proc/PID/stat)."""
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()  # from field 3, state
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stderr(self):
        return "".join(self.err)

    def http(self, method, path, body=None, headers=None, timeout=300):
        """One raw request; returns (status, parsed JSON or text)."""
        c = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        if isinstance(body, (dict, list)):
            body = json.dumps(body)
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        data = r.read()
        c.close()
        try:
            return r.status, json.loads(data)
        except ValueError:
            return r.status, data.decode("utf-8", "replace")

    def metrics(self):
        status, text = self.http("GET", "/metrics")
        assert status == 200, status
        out = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                out[name] = float(value)
        return out

    def wait_idle(self, timeout=120):
        """Polls /metrics until nothing runs or waits; returns the metrics."""
        deadline = time.time() + timeout
        while True:
            m = self.metrics()
            if (m["weft_requests_running"] == 0 and m["weft_queue_depth"] == 0
                    and m["weft_streams_open"] == 0):
                return m
            if time.time() > deadline:
                raise AssertionError(f"server not idle: {m}")
            time.sleep(0.2)


def sse_events(resp):
    """The `data:` payloads of a server-sent event stream (http.client response)."""
    for raw in resp:
        line = raw.decode("utf-8").rstrip("\r\n")
        if line.startswith("data: "):
            yield line[6:]


failures = []


def check(cond, what):
    """Records a failed check (the test goes on and reports all of them)."""
    if not cond:
        failures.append(what)
        print(f"  FAIL {what}", file=sys.stderr)


def run_tests(tests, server=None):
    """Runs each test function in order, prints ok/FAIL, returns the exit code.
    WEFT_TEST_FILTER=a,b runs only the tests whose names contain a or b."""
    only = [w for w in os.environ.get("WEFT_TEST_FILTER", "").split(",") if w]
    if only:
        tests = [t for t in tests if any(w in t.__name__ for w in only)]
    n_fail = 0
    for t in tests:
        before = len(failures)
        t0 = time.time()
        try:
            t()
        except Exception as e:  # a test that raises has failed; the rest still run
            import traceback

            traceback.print_exc()
            failures.append(f"{t.__name__}: {e!r}")
        ok = len(failures) == before
        n_fail += not ok
        print(f"{'ok  ' if ok else 'FAIL'} {t.__name__} ({time.time() - t0:.1f} s)", file=sys.stderr)
    if n_fail and server is not None:
        print("--- server stderr (last 40 lines) ---\n" + "".join(server.err[-40:]), file=sys.stderr)
    print(f"{len(tests) - n_fail} passed, {n_fail} failed", file=sys.stderr)
    return 1 if n_fail else 0


def main(tests, server):
    """Runs the tests, stops the server (SIGTERM); exits non-zero if a test
    failed or the server did not exit 0 (under ASan: a leak or a bad access)."""
    try:
        rc = run_tests(tests, server)
    finally:
        code = server.stop()
    if code != 0:
        print(f"server exit code {code}\n{server.stderr()[-4000:]}", file=sys.stderr)
        rc = 1
    sys.exit(rc)
