"""Helpers shared by the scripts that start an HTTP server on a loopback port."""
import socket, time, urllib.request

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

def wait_ready(port, proc, name="server", timeout=900):
    """Poll GET /health until it answers 200; fail if `proc` exits or `timeout` seconds pass."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            raise SystemExit(f"{name} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                if r.status == 200:
                    return
        except Exception:
            pass
        time.sleep(0.5)
    raise SystemExit(f"{name} did not become ready")
