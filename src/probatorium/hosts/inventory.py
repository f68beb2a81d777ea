"""An ansible inventory, read by ansible itself: the client host, the server hosts, their addresses.

The inventory (YAML or INI, anything ``ansible-inventory`` reads) has a group
``client`` with exactly one host (walkers, load generator, validator) and a
group ``server`` with one or more hosts (the targets). Each host's traffic
address is its ``ansible_host`` (or its inventory name when unset), or its host
variable ``lan_ip`` when ``CLUSTER_USE_LAN=1``: a machine reached over one
network for SSH and over another for the traffic under test.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from probatorium.errors import InfraError, UsageError

USE_LAN_ENV = "CLUSTER_USE_LAN"


@dataclass(frozen=True)
class InventoryHost:
    """One inventory host: its name, role, the address traffic goes to, its variables."""

    name: str
    role: str  # client | server
    address: str
    variables: dict = field(default_factory=dict, compare=False, hash=False)


@dataclass(frozen=True)
class Inventory:
    """The hosts of an inventory file, by role."""

    path: Path
    client: InventoryHost
    servers: tuple[InventoryHost, ...]

    @property
    def hosts(self) -> tuple[InventoryHost, ...]:
        return (self.client, *self.servers)

    def server(self, name: str) -> InventoryHost:
        for host in self.servers:
            if host.name == name:
                return host
        raise UsageError(f"{name!r} is not a server host of {self.path} "
                         f"(server hosts: {', '.join(h.name for h in self.servers)})")

    def pick(self, wanted: str | None) -> tuple[InventoryHost, ...]:
        """The hosts `wanted` names (csv of names, or all/empty): CLEANUP_HOSTS, --hosts."""
        if not wanted or wanted.strip() in ("", "all"):
            return self.hosts
        names = [n.strip() for n in wanted.split(",") if n.strip()]
        known = {h.name: h for h in self.hosts}
        unknown = [n for n in names if n not in known]
        if unknown:
            raise UsageError(f"unknown host {', '.join(unknown)} in {self.path}; hosts are {', '.join(known)}")
        return tuple(known[n] for n in dict.fromkeys(names))


def ansible_tool(name: str) -> str:
    """Path of an ansible command (``ansible-playbook``…): beside this Python first, then on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise InfraError(f"{name} not found: the ansible driver needs ansible-core on the controller "
                         "(pip install -r requirements.lock)")
    return found


def _group_hosts(listing: dict, group: str, seen: frozenset[str] = frozenset()) -> list[str]:
    """Hosts of `group` and of its child groups, in inventory order."""
    node = listing.get(group) or {}
    names = list(node.get("hosts") or [])
    for child in node.get("children") or []:
        if child not in seen:
            names += [h for h in _group_hosts(listing, child, seen | {group}) if h not in names]
    return names


def traffic_address(name: str, variables: dict, use_lan: bool) -> str:
    """Where traffic to this host goes: ``lan_ip`` under CLUSTER_USE_LAN=1, else ``ansible_host``."""
    if use_lan:
        lan = variables.get("lan_ip")
        if not lan:
            raise UsageError(f"CLUSTER_USE_LAN=1 but host {name} has no lan_ip variable in the inventory")
        return str(lan)
    return str(variables.get("ansible_host") or name)


def list_inventory(path: Path) -> dict:
    """``ansible-inventory -i PATH --list`` as a dict; one clear error when ansible cannot read it."""
    if not path.is_file():
        raise UsageError(f"inventory {path}: no such file")
    try:
        done = subprocess.run([ansible_tool("ansible-inventory"), "-i", str(path), "--list"], capture_output=True,
                              text=True, timeout=60, env={**os.environ, "ANSIBLE_INVENTORY_UNPARSED_FAILED": "1",
                                                          "ANSIBLE_NOCOLOR": "1"})
    except subprocess.TimeoutExpired:
        raise InfraError(f"ansible-inventory -i {path} took more than 60 s") from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
        raise UsageError(f"inventory {path}: ansible-inventory could not read it: {last}")
    try:
        return json.loads(done.stdout)
    except ValueError:
        raise InfraError(f"inventory {path}: ansible-inventory printed no JSON") from None


def parse_listing(path: Path, listing: dict, use_lan: bool) -> Inventory:
    """The Inventory of an ``ansible-inventory --list`` document (pure: the tests feed it dicts)."""
    hostvars = (listing.get("_meta") or {}).get("hostvars") or {}
    clients, servers = _group_hosts(listing, "client"), _group_hosts(listing, "server")
    if not clients:
        raise UsageError(f"inventory {path}: no host in group 'client' (it needs exactly one client host)")
    if len(clients) > 1:
        raise UsageError(f"inventory {path}: group 'client' has {len(clients)} hosts ({', '.join(clients)}); "
                         "it needs exactly one")
    if not servers:
        raise UsageError(f"inventory {path}: no host in group 'server' (it needs one or more server hosts)")
    if clients[0] in servers:
        raise UsageError(f"inventory {path}: host {clients[0]} is in both groups client and server")

    def host(name: str, role: str) -> InventoryHost:
        variables = dict(hostvars.get(name) or {})
        return InventoryHost(name, role, traffic_address(name, variables, use_lan), variables)

    return Inventory(path=path, client=host(clients[0], "client"),
                     servers=tuple(host(n, "server") for n in servers))


def read_inventory(path: Path | str | None) -> Inventory:
    """Read an inventory file with ansible; UsageError (one line) for a missing or unusable one."""
    if path is None or str(path).strip() == "":
        raise UsageError("--driver ansible needs --inventory FILE (or PROBATORIUM_INVENTORY): "
                         "an ansible inventory with groups client and server")
    path = Path(path).expanduser()
    use_lan = os.environ.get(USE_LAN_ENV, "").strip().lower() in ("1", "true", "yes", "on")
    return parse_listing(path.resolve(), list_inventory(path), use_lan)
