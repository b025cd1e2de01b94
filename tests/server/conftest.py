"""Start the real `deepseek serve` on the tiny fixture model and talk to it over HTTP."""

import json
import os
import re
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("DEEPSEEK_BIN", ROOT / "target" / "debug" / "deepseek"))
MODEL = ROOT / "fixtures" / "models" / "tiny-mha"
MODEL_ID = "tiny-mha"


def _die_with_parent():
    """Linux: the server gets SIGTERM if the test process dies without stopping it."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class Server:
    """A running server: its process, base URL and log."""

    def __init__(self, *extra):
        self.log = tempfile.NamedTemporaryFile("w+", suffix=".log", delete=False)
        args = [str(BIN), "serve", "--model", str(MODEL), "--port", "0", *extra]
        env = dict(os.environ, RUST_LOG="info")
        self.proc = subprocess.Popen(
            args, stdout=self.log, stderr=self.log, env=env, preexec_fn=_die_with_parent
        )
        self.url = None
        # (health body, completion status, completion body) seen while the model loaded.
        self.loading_answers = []
        deadline = time.time() + 60
        while time.time() < deadline:
            text = Path(self.log.name).read_text()
            m = re.search(r"listening on (http://[0-9.:]+)", text)
            if m and self.url is None:
                self.url = m.group(1)
            if self.url:
                try:
                    h = requests.get(self.url + "/health", timeout=5)
                    if h.status_code == 200:
                        return
                    if h.status_code == 503 and h.json().get("status") == "loading":
                        c = requests.post(self.url + "/v1/completions", json={"prompt": "x"}, timeout=5)
                        # Keep the answer only if the model was still loading after it came back:
                        # otherwise loading may have ended between the two probes.
                        after = requests.get(self.url + "/health", timeout=5)
                        if after.status_code == 503 or c.status_code == 503:
                            self.loading_answers.append((h.json(), c.status_code, c.json()))
                except requests.RequestException:
                    pass
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited early:\n{text}")
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("server did not become ready:\n" + Path(self.log.name).read_text())

    def logs(self):
        return Path(self.log.name).read_text()

    def metrics(self):
        """The /metrics exposition as {name{labels}: value}."""
        out = {}
        for line in requests.get(self.url + "/metrics", timeout=10).text.splitlines():
            if line and not line.startswith("#"):
                k, v = line.rsplit(" ", 1)
                out[k] = float(v)
        return out

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        try:
            os.unlink(self.log.name)
        except OSError:
            pass


@pytest.fixture(scope="session")
def server():
    s = Server("--parallel", "8")
    yield s
    s.stop()


@pytest.fixture(scope="session")
def client(server):
    import openai

    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)


def run_cli(prompt, *args):
    """`deepseek run --json` on the fixture model."""
    out = subprocess.run(
        [str(BIN), "run", "--model", str(MODEL), "--json", "--temperature", "0", *args, prompt],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout)
