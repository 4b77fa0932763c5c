"""The one error hierarchy of fl-broker. Third-party exceptions are translated at the boundary."""

from __future__ import annotations


class FlBrokerError(Exception):
    """Base class of every error fl-broker raises on purpose."""


class DecodeError(FlBrokerError):
    """A message body could not be decoded; the message says what was wrong."""


class ConfigError(FlBrokerError):
    """An app config or a program option is wrong; the message names the file and the key."""


class TransportError(FlBrokerError):
    """Base class of messaging failures."""


class ConnectionLost(TransportError):
    """The broker connection went away and could not be restored in time."""


class AuthenticationFailed(TransportError):
    """The broker refused the credentials; retrying will not help."""


class PublishFailed(TransportError):
    """The broker did not confirm a message (nacked, unroutable or refused)."""


class MessageTooLarge(TransportError):
    """A body is over the configured size limit."""


class RemoteError(FlBrokerError):
    """A request was answered with an error; carries the remote error as data."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.message = message


class RequestTimeout(FlBrokerError):
    """A request got no reply in time."""
