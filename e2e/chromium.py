"""The browser every test and benchmark drives: Debian's Chromium, never a downloaded one."""
from __future__ import annotations

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",  # root in a container has no usable sandbox
    "--disable-gpu",
    # Keep the browser from calling home: the machine has no general network.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
