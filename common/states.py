"""The connection state machine both sides follow, as a transition table (h11-style).

    AWAIT_HELLO --hello--> AWAIT_LOGIN --login--> READY

The relay checks every incoming request against it (a violation is the peer's fault:
RemoteProtocolError, code `out_of_order`); a client checks before it sends (a violation
is ours: LocalProtocolError).
"""

from __future__ import annotations

from enum import Enum

from hushwire.common.errors import ErrorCode, LocalProtocolError, RemoteProtocolError
from hushwire.common.messages import (
    Ack,
    FetchBundle,
    FetchDevices,
    Hello,
    LinkAccept,
    LinkFetch,
    LinkJoin,
    LinkStart,
    Login,
    Ping,
    PrekeyCount,
    PublishDevices,
    PublishKeys,
    Request,
    Send,
    SendDevices,
    Who,
)


class ConnState(Enum):
    AWAIT_HELLO = "await_hello"
    AWAIT_LOGIN = "await_login"
    READY = "ready"

    # Members are singletons: hash by identity. Enum's own hashes the name in Python,
    # and `check` looks a state up for every request the relay takes.
    __hash__ = object.__hash__


ALLOWED: dict[ConnState, frozenset[type[Request]]] = {
    ConnState.AWAIT_HELLO: frozenset({Hello}),
    # A new device joins an account (link_fetch, link_join) before it has a credential.
    ConnState.AWAIT_LOGIN: frozenset({Login, Ping, LinkFetch, LinkJoin}),
    ConnState.READY: frozenset(
        {
            PublishKeys,
            FetchBundle,
            PrekeyCount,
            Send,
            Ack,
            Who,
            Ping,
            FetchDevices,
            PublishDevices,
            SendDevices,
            LinkStart,
            LinkAccept,
        }
    ),
}

# A successful reply to these moves the connection on.
ADVANCE: dict[tuple[ConnState, type[Request]], ConnState] = {
    (ConnState.AWAIT_HELLO, Hello): ConnState.AWAIT_LOGIN,
    (ConnState.AWAIT_LOGIN, Login): ConnState.READY,
}


def check(state: ConnState, request: Request, *, remote: bool) -> None:
    """Raise if `request` may not be sent in `state`, naming both."""
    if type(request) in ALLOWED[state]:
        return
    text = f"{request.TYPE!r} is not allowed in state {state.value}"
    if remote:
        raise RemoteProtocolError(text, code=ErrorCode.OUT_OF_ORDER)
    raise LocalProtocolError(text)


def advance(state: ConnState, request: Request) -> ConnState:
    """The state after `request` succeeded."""
    return ADVANCE.get((state, type(request)), state)
