"""Real SSH hosts for the ansible driver's tests: a netns cluster, one sshd in each namespace.

Each sshd runs in its own mount namespace with a private tmpfs on /tmp (so every
"host" has its own /tmp, like a real machine), listens on its namespace's
address, and accepts only an ed25519 key generated for the test. Everything
(keys, configs, logs) lives in the test's tmp dir.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from probatorium.hosts.netns import Cluster, HOSTS, create_cluster, destroy_cluster, wait_reachable

SSHD = "/usr/sbin/sshd"
SSH_PORT = 22


@dataclass
class SshHosts:
    cluster: Cluster
    root: Path
    key: Path
    sshd: dict[str, subprocess.Popen] = field(default_factory=dict)

    def inventory(self, path: Path) -> Path:
        """A YAML inventory of the three hosts (client; server-a, server-b)."""
        common = (f"-o UserKnownHostsFile=/dev/null -o StrictHostKeyChecking=no -o LogLevel=ERROR "
                  f"-o IdentitiesOnly=yes")
        lines = ["all:", "  vars:", "    ansible_user: root", f"    ansible_ssh_private_key_file: {self.key}",
                 f"    ansible_ssh_common_args: '{common}'", "    ansible_python_interpreter: /usr/bin/python3",
                 "  children:"]
        for group, hosts in (("client", ["client"]), ("server", ["server-a", "server-b"])):
            lines += [f"    {group}:", "      hosts:"]
            for h in hosts:
                lines += [f"        {h}:", f"          ansible_host: {self.cluster.addresses[h]}",
                          f"          lan_ip: {self.cluster.addresses[h]}"]
        path.write_text("\n".join(lines) + "\n")
        return path

    def mount_pid(self, host: str) -> int:
        """A pid inside `host`'s mount namespace (the sshd itself)."""
        return self.sshd[host].pid

    def tmp_listing(self, host: str) -> list[str]:
        """`host`'s /tmp, as its sshd sees it (nsenter into the sshd's mount namespace)."""
        done = subprocess.run(["nsenter", "-t", str(self.mount_pid(host)), "-m", "--", "ls", "-A", "/tmp"],
                              capture_output=True, text=True, timeout=20)
        return sorted(done.stdout.split())


def start_hosts(root: Path) -> SshHosts:
    """Cluster up, keys made, one sshd per namespace; raise if any does not accept within 15 s.

    `root` must not be under /tmp: each sshd's /tmp is a fresh tmpfs that hides it."""
    if str(root.resolve()).startswith("/tmp/"):
        raise ValueError(f"{root}: the sshd hosts' files cannot live under /tmp (a private tmpfs hides it)")
    root.mkdir(parents=True, exist_ok=True)
    key = root / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True, timeout=30)
    cluster = create_cluster(f"t{os.getpid():x}"[:8])
    hosts = SshHosts(cluster, root, key)
    try:
        for host in HOSTS:
            hosts.sshd[host] = _sshd(cluster, host, root, key)
        for host in HOSTS:
            if not wait_reachable(cluster.addresses[host], SSH_PORT, 15.0):
                raise RuntimeError(f"sshd of {host} does not accept: {(root / host / 'sshd.log').read_text()[-500:]}")
    except BaseException:
        stop_hosts(hosts)
        raise
    return hosts


def _sshd(cluster: Cluster, host: str, root: Path, key: Path) -> subprocess.Popen:
    d = root / host
    d.mkdir()
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / "host_key")], check=True, timeout=30)
    shutil.copy(key.with_suffix(".pub"), d / "authorized_keys")
    os.chmod(d / "authorized_keys", 0o600)
    config = d / "sshd_config"
    config.write_text("\n".join([
        f"ListenAddress {cluster.addresses[host]}", f"Port {SSH_PORT}", f"HostKey {d / 'host_key'}",
        f"AuthorizedKeysFile {d / 'authorized_keys'}", f"PidFile {d / 'sshd.pid'}", "PermitRootLogin prohibit-password",
        "PasswordAuthentication no", "KbdInteractiveAuthentication no", "UsePAM no", "StrictModes no",
        "MaxSessions 50", "MaxStartups 50:30:100", "Subsystem sftp internal-sftp", ""]))
    # A private /tmp: a new mount namespace (private propagation), a tmpfs on /tmp, then sshd.
    # /run too (sshd wants /run/sshd; the host's own /run, not the machine's).
    script = (f"mount -t tmpfs -o size=512m,mode=1777 tmpfs /tmp && mount -t tmpfs -o size=16m tmpfs /run && "
              f"mkdir -p /run/sshd && exec {SSHD} -D -e -f {config}")
    log = (d / "sshd.log").open("wb")
    return subprocess.Popen([*cluster.exec_argv(host), "unshare", "--mount", "--propagation", "private",
                             "sh", "-c", script], stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                            start_new_session=True)


def stop_hosts(hosts: SshHosts) -> None:
    """Every sshd stopped, the cluster destroyed (its namespaces, veths and bridge)."""
    for proc in hosts.sshd.values():
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + 5
    for proc in hosts.sshd.values():
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
    destroy_cluster(hosts.cluster)
