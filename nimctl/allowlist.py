"""NIM_MEDIA_ALLOWLIST: the hosts and networks that media URLs may reach although not public.

Parsed where the settings are validated (`nimctl check`, `nimctl k8s` and `nimctl serve` refuse
a bad entry alike) and read by the media fetcher; no HTTP client is imported here.
"""

from __future__ import annotations

import re
from ipaddress import IPv4Network, IPv6Network, ip_network

from nimctl.errors import ConfigError

IPNetwork = IPv4Network | IPv6Network
Allowlist = tuple[tuple[str, ...], tuple[IPNetwork, ...]]

ALLOWLIST_SETTING = "NIM_MEDIA_ALLOWLIST"
_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
# A last label of digits or hex is an IPv4 address in one of inet_aton's forms, not a name.
NUMERIC_LABEL = re.compile(r"^(?:[0-9]+|0x[0-9a-f]*)$", re.IGNORECASE)


class AllowlistError(ConfigError, ValueError):
    """A malformed entry; a ValueError too, so that settings validation reports it per field."""


def parse_allowlist(value: str) -> Allowlist:
    """'images.example.com, *.corp.internal, 127.0.0.1/32, 10.0.0.0/8, ::1' -> (hosts, networks).
    Bare IPs become /32 or /128. Raises AllowlistError (a ConfigError) naming the setting and
    the bad entry for anything malformed (e.g. '10.0.0.0/33', 'http://x', '*', empty labels)."""
    hosts: list[str] = []
    networks: list[IPNetwork] = []
    # Empty items are skipped so that a trailing comma in an env file is harmless.
    for entry in filter(None, re.split(r"[\s,]+", value)):
        lowered = entry.lower()
        last_label = lowered.rstrip(".").rsplit(".", 1)[-1]
        if "/" in entry or ":" in entry or NUMERIC_LABEL.match(last_label):
            try:
                networks.append(ip_network(entry, strict=True))
            except ValueError as exc:
                raise AllowlistError(f"{_bad_entry(entry)} ({exc})") from None
            continue
        name = lowered[:-1] if lowered.endswith(".") else lowered
        bare = name[2:] if name.startswith("*.") else name
        if len(bare) > 253 or not all(_LABEL.match(label) for label in bare.split(".")):
            raise AllowlistError(f"{_bad_entry(entry)} (write IDNs in their xn-- form)")
        hosts.append(name)
    return tuple(hosts), tuple(networks)


def _bad_entry(entry: str) -> str:
    return (
        f"{ALLOWLIST_SETTING}: {entry!r} is not a host name, '*.domain' pattern, "
        "IP address or CIDR network"
    )
