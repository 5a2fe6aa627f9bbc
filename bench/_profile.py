"""Optional: sample the gunicorn workers with py-spy while a case runs, and summarise where
the server's time goes (inclusive share per function and per package).

py-spy is not a dependency of the project: `.venv/bin/pip install py-spy` to use --profile.
"""
from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^:()]*)(?::(?P<line>\d+))?\)$")


def py_spy() -> str | None:
    here = Path(sys.executable).parent / "py-spy"
    return str(here) if here.exists() else shutil.which("py-spy")


class Sampler:
    def __init__(self, master_pid: int, out: Path, rate: int = 100):
        exe = py_spy()
        if exe is None:
            raise RuntimeError("--profile needs py-spy: .venv/bin/pip install py-spy")
        self.out = out
        self.proc = subprocess.Popen([exe, "record", "--pid", str(master_pid), "--subprocesses",
                                      "--rate", str(rate), "--format", "raw", "-o", str(out)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _short(file: str) -> str:
    for marker in ("site-packages/", "/work/main/", "lib/python3.11/"):
        if marker in file:
            return file.split(marker, 1)[1]
    return file


def _package(file: str) -> str:
    f = _short(file)
    top = f.split("/", 1)[0]
    if top in ("app", "sync_api"):
        parts = f.split("/")
        return "/".join(parts[:2]) if len(parts) > 2 else f
    return top.replace(".py", "")


def _source(file: str, line: str | None) -> str:
    try:
        return Path(file).read_text().splitlines()[int(line) - 1].strip()[:70]
    except (OSError, ValueError, IndexError, TypeError):
        return ""


def summarise(raw: Path, top: int = 25) -> str:
    """Shares of the time spent serving requests (samples under Flask.wsgi_app; idle pool
    threads and the accept loop are left out)."""
    stacks = []
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        frames = [m.groupdict() for m in map(_FRAME.match, stack.split(";")) if m]
        if any(f["func"] == "Flask.wsgi_app" for f in frames):
            stacks.append((frames, int(count)))
    total = sum(n for _, n in stacks)
    if not total:
        return "(no samples in request handling)"
    inclusive, sites, selfc, pkg_self = Counter(), Counter(), Counter(), Counter()
    for frames, n in stacks:
        seen, seen_sites = set(), set()
        for f in frames:
            key = f"{f['func']} ({_short(f['file'])})"
            if key not in seen:
                inclusive[key] += n
                seen.add(key)
            short = _short(f["file"])
            if short.startswith(("app/", "sync_api/")) and f["line"]:
                site = (short, f["line"], f["func"], f["file"])
                if site not in seen_sites:
                    sites[site] += n
                    seen_sites.add(site)
        if frames:
            last = frames[-1]
            selfc[f"{last['func']} ({_short(last['file'])})"] += n
            pkg_self[_package(last["file"])] += n
    lines = [f"{total} samples in request handling (py-spy, all workers)", "",
             "Inclusive time, top functions:"]
    lines += [f"  {n / total:6.1%}  {k}" for k, n in inclusive.most_common(top)]
    lines += ["", "Inclusive time by call site in app/ and sync_api/:"]
    lines += [f"  {n / total:6.1%}  {short}:{line} {func}: {_source(file, line)}"
              for (short, line, func, file), n in sites.most_common(top)]
    lines += ["", "Self time by package or app module:"]
    lines += [f"  {n / total:6.1%}  {k}" for k, n in pkg_self.most_common(12)]
    lines += ["", "Self time, top functions:"]
    lines += [f"  {n / total:6.1%}  {k}" for k, n in selfc.most_common(12)]
    return "\n".join(lines)


if __name__ == "__main__":
    print(summarise(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 25))
