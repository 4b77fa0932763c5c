"""Broker URL lists: `--broker URL1,URL2,URL3` (or the option repeated, or FL_BROKER_URL with commas) names
the nodes of one RabbitMQ cluster, tried in turn. Every URL must log in as the same user to the same
virtual host: RabbitMQ checks each message's user_id against the login, and the federation lives in one
vhost, so a list that mixed them would fail in confusing ways after a failover."""

from __future__ import annotations

import re
import urllib.parse

# A comma starts a new URL only where a scheme follows, so a comma inside a password or vhost stays put.
_NEXT_URL = re.compile(r"\s*,\s*(?=[a-z][a-z0-9+.-]*://)", re.IGNORECASE)


def each_url(text: str) -> list[str]:
    """The URLs of `text` (comma-separated), unchecked (e.g. to find every password in it)."""
    return [url for url in _NEXT_URL.split(text.strip()) if url]


def split_broker_urls(text: str) -> list[str]:
    """The URLs of `text` (comma-separated), checked to share scheme, login and vhost; ValueError if not."""
    urls = each_url(text)
    if not urls:
        raise ValueError("no broker URL given")
    first = _identity(urls[0])
    for url in urls[1:]:
        if _identity(url) != first:
            scheme, user, vhost = first
            raise ValueError(
                f"broker URL {safe_url(url)!r} differs from the first one: every URL of a list must use "
                f"{scheme}:// with user {user!r} and vhost {vhost!r} (the nodes of one cluster)"
            )
    return urls


def safe_url(url: str) -> str:
    """`url` with any password replaced by ***, fit for logs."""
    return re.sub(r"(://[^:/@]*):[^@/]*@", r"\1:***@", url)


def host_of(url: str) -> str:
    """scheme://host:port of `url`: what logs say about a node (no login, no password, no vhost)."""
    parts = urllib.parse.urlsplit(url)
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname or 'localhost'}{port}"


def _identity(url: str) -> tuple[str, str, str]:
    parts = urllib.parse.urlsplit(url)
    vhost = urllib.parse.unquote(parts.path[1:]) if len(parts.path) > 1 else "/"
    return parts.scheme.lower(), urllib.parse.unquote(parts.username or "guest"), vhost
