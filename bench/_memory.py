"""Memory and CPU of a server's processes while load runs: RSS and PSS (proportional set size:
pages shared between gunicorn's master and its forked workers counted once, split among them),
read from /proc every few hundred milliseconds in a background thread, keeping the peaks."""
from __future__ import annotations

import os
import threading
from pathlib import Path


def children(pid: int) -> list[int]:
    kids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = proc_stat(int(entry))
            if fields and int(fields[1]) == pid:
                kids.append(int(entry))
    return kids


def memory_kb(pid: int) -> tuple[int, int | None]:
    """(RSS, PSS) in kB; PSS is None where smaps_rollup cannot be read."""
    rss = pss = None
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Rss:"):
                rss = int(line.split()[1])
            elif line.startswith("Pss:"):
                pss = int(line.split()[1])
    except OSError:
        pass
    if rss is None:
        try:
            rss = int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024
        except OSError:
            rss = 0
    return rss, pss


def cpu_seconds(pids: list[int], reaped_by: int | None = None) -> float:
    """CPU of the live processes `pids`, and with `reaped_by`, of every child that process has
    seen end (a PostgreSQL backend that closed its connection, say)."""
    total = 0.0
    for pid in pids:
        fields = proc_stat(pid)
        if fields:
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    if reaped_by is not None:
        fields = proc_stat(reaped_by)
        if fields:
            total += (int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")
    return total


def proc_stat(pid: int) -> list[str] | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2:].split()


class MemoryWatch:
    """Peaks of each process's RSS/PSS and of their sums, for `roles` = {label: pid}."""

    def __init__(self, roles: dict[str, int], every_s: float = 0.25):
        self.roles, self.every = roles, every_s
        self.peak = {label: [0, 0] for label in roles}
        self.peak_total = [0, 0]
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def _run(self):
        while not self._stop.wait(self.every):
            self._sample()

    def _sample(self):
        total = [0, 0]
        for label, pid in self.roles.items():
            rss, pss = memory_kb(pid)
            pss = pss if pss is not None else 0
            peak = self.peak[label]
            peak[0], peak[1] = max(peak[0], rss), max(peak[1], pss)
            total[0] += rss
            total[1] += pss
        self.peak_total = [max(self.peak_total[0], total[0]), max(self.peak_total[1], total[1])]
        self.samples += 1

    def report(self) -> dict:
        mb = lambda kb: round(kb / 1024, 1)  # noqa: E731
        return {"per_process_mb": {k: {"rss": mb(v[0]), "pss": mb(v[1])} for k, v in self.peak.items()},
                "total_rss_mb": mb(self.peak_total[0]), "total_pss_mb": mb(self.peak_total[1]),
                "samples": self.samples}
