"""Whether ``tc qdisc ... netem`` works on this host, probed once in a throw-away network namespace.

The probe never touches the host's own interfaces: it creates a namespace of its own, tries to add
a netem qdisc to that namespace's loopback, and deletes the namespace again, whatever happened.
"""

from __future__ import annotations

import functools
import os
import secrets
import shutil
import subprocess

PROBE_TIMEOUT_S = 5.0


def _run(argv: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=PROBE_TIMEOUT_S,
                          stdin=subprocess.DEVNULL)


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[0] if lines else "no output"


@functools.cache
def netem_unavailable() -> str | None:
    """None when netem works here, else the one-line reason (probed once per process)."""
    if os.geteuid() != 0:
        return "net-netem needs root (a network namespace and tc)"
    ip, tc = shutil.which("ip"), shutil.which("tc")
    if ip is None or tc is None:
        return "net-netem needs iproute2 (ip and tc): not installed"
    name = f"probatorium-netem-probe-{os.getpid()}-{secrets.token_hex(3)}"
    try:
        made = _run([ip, "netns", "add", name])
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"cannot create a network namespace to probe netem: {exc}"
    if made.returncode != 0:
        return f"cannot create a network namespace to probe netem: {_first_line(made.stderr)}"
    try:
        _run([ip, "netns", "exec", name, ip, "link", "set", "lo", "up"])
        added = _run([ip, "netns", "exec", name, tc, "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms"])
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"the netem probe failed: {exc}"
    finally:
        try:
            _run([ip, "netns", "del", name])
        except (OSError, subprocess.TimeoutExpired):
            pass
    if added.returncode == 0:
        return None
    reason = _first_line(added.stderr)
    if "unknown" in reason.lower():
        return f"this kernel has no netem qdisc (tc: {reason})"
    return f"tc could not add a netem qdisc: {reason}"
