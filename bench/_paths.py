"""Where things are: the repository, the shared peer scripts, the work directory."""
from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
# The peer measurements live beside the project (shared/peers); PEERS_DIR overrides.
PEERS = Path(os.environ.get("PEERS_DIR") or ROOT.parent / "shared" / "peers").resolve()
VENV_BIN = Path(sys.executable).parent


def peers_import(name: str):
    """Import one of the shared peer modules (gen_data, peerlib) without copying it."""
    if not (PEERS / f"{name}.py").exists():
        raise SystemExit(f"bench: {PEERS / (name + '.py')} not found; set PEERS_DIR to the "
                         "folder holding the peer scripts (gen_data.py, sql_ceilings.py, ...)")
    if str(PEERS) not in sys.path:
        sys.path.append(str(PEERS))
    return importlib.import_module(name)


def use_repo() -> None:
    """Make `import app` work in this process (for the in-process setup and census)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))


def stop_process(proc, log=None, grace_s: float = 15) -> None:
    """Stop a server this run started (by its own handle, never by name), then close its log."""
    import subprocess
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
    if log is not None:
        log.close()
