"""Real gunicorn servers for tests that need a process: browser tests and cross-server pokes."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn(env: dict, port: int, stdout, stderr, *options: str) -> subprocess.Popen:
    """gunicorn serving the app on 127.0.0.1:port, in a process group of its own so its
    workers die with it."""
    return subprocess.Popen(
        [sys.executable, "-m", "gunicorn", *options, "--bind", f"127.0.0.1:{port}",
         # The default control socket is one path per user: parallel servers would clash.
         "--no-control-socket", "app:create_app()"],
        cwd=ROOT, env=env, stdout=stdout, stderr=stderr, stdin=subprocess.DEVNULL,
        start_new_session=True)


def spawn_procfile(env: dict, port: int, stdout, stderr) -> subprocess.Popen:
    """The Procfile's web line as production runs it, but listening on 127.0.0.1:port only."""
    web = next(line for line in (ROOT / "Procfile").read_text().splitlines() if line.startswith("web:"))
    command = web[4:].strip().replace("0.0.0.0", "127.0.0.1")
    return subprocess.Popen(["bash", "-c", f"exec {command} --no-control-socket"], cwd=ROOT,
                            env={**env, "PORT": str(port),
                                 "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"},
                            stdout=stdout, stderr=stderr,
                            stdin=subprocess.DEVNULL, start_new_session=True)


def wait_until_serving(proc: subprocess.Popen, port: int, timeout: float = 30) -> str | None:
    """None once the sign-in page answers; otherwise what went wrong last."""
    deadline = time.monotonic() + timeout
    last_error = "no answer yet"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return f"gunicorn exited with {proc.returncode}"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/login", timeout=2) as resp:
                if resp.status == 200:
                    return None
                last_error = f"GET /login answered {resp.status}"
        except urllib.error.HTTPError as error:
            last_error = f"GET /login answered {error.code}"
        except (urllib.error.URLError, OSError) as error:
            last_error = repr(error)
        time.sleep(0.1)
    return f"{last_error} after {timeout} s"


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, sig)
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    except ProcessLookupError:
        proc.wait(timeout=10)
