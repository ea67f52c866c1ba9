"""A lean XMPP c2s load generator: as cheap per message as the hushwire and MQTT ones.

Login (direct TLS, XEP-0368 style; no XML library anywhere):

    -> <stream:stream to=HOST>          <- <stream:features> (mechanisms)
    -> <auth mechanism=SCRAM-SHA-1>     <- <challenge>   -> <response>   <- <success>
    -> <stream:stream> (restart)        <- <stream:features> (bind, sm)
    -> <iq><bind/></iq>                 <- <iq type=result>
    -> <enable/> (XEP-0198) + <presence/>   <- <enabled/>   (ready)

Without the initial presence both servers store a message to a connected user offline.
Then each message is one pre-built `<message type=chat><body>SEQ PAD</body></message>`
followed by `<r/>`: the server's `<a h=N/>` answer is our per-message `ok`. Received
messages are found by `</message>` and matched by the 16 hex digits that open the body;
every read that brought stanzas (or an `<r/>`) is answered with one `<a h=count/>`, like
the hushwire generator's one `ack` per read.
"""

from __future__ import annotations

import base64
import os
from collections import deque

from bench.clients import PAD, Client, Stats
from bench.scram import ScramClient

PASSWORD = b"bench-password"
SM = b"urn:xmpp:sm:3"
STREAM = (
    b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
    b"xmlns:stream='http://etherx.jabber.org/streams' to='%s' version='1.0'>"
)
R = b"<r xmlns='urn:xmpp:sm:3'/>"
PAD_HEX = PAD.hex().encode()  # body padding with nothing to escape
# login states
FEATURES, CHALLENGE, SUCCESS, FEATURES2, BOUND, RUNNING = range(6)


def element(buf: bytes, start: int) -> tuple[int, bool]:
    """End (exclusive) of the element opening at `start`, and whether it is complete."""
    gt = buf.find(b">", start)
    if gt < 0:
        return start, False
    if buf[gt - 1] == 0x2F:  # `/>`: empty element
        return gt + 1, True
    space = buf.find(b" ", start, gt)
    name = buf[start + 1 : space if space > 0 else gt]
    close = buf.find(b"</" + name + b">", gt)
    if close < 0:
        return start, False
    return close + len(name) + 3, True


def text_of(buf: bytes, tag: bytes) -> bytes:
    """The text inside the first `<tag ...>...</tag>` of buf (b"" if empty or absent)."""
    start = buf.find(b"<" + tag)
    if start < 0:
        return b""
    gt = buf.find(b">", start)
    if buf[gt - 1] == 0x2F:
        return b""
    return buf[gt + 1 : buf.find(b"</" + tag + b">", gt)]


def attribute(elem: bytes, name: bytes) -> bytes:
    """An attribute's value, quoted either way (`h='3'` or `h="3"`)."""
    i = elem.find(b" " + name + b"=")
    if i < 0:
        return b""
    i += len(name) + 2
    return elem[i + 1 : elem.find(elem[i : i + 1], i + 1)]


class XmppClient(Client):
    """One user `u<index>@host`; sends chat messages to `u<dest>@host`."""

    def __init__(self, stats: Stats, index: int, host: bytes) -> None:
        super().__init__(stats, index)
        self.host = host
        self.state = FEATURES
        self.scram = ScramClient(b"u%d" % index, PASSWORD, base64.b64encode(os.urandom(18)))
        self.unacked: deque[int] = deque()  # our stanzas since <enable/>, oldest first
        self.h_out = 0  # how many of them the server has acked
        self.h_in = 0  # stanzas received since <enable/>
        self.prefix: dict[int, bytes] = {}  # dest -> pre-built message start

    def start(self) -> None:
        self.write(STREAM % self.host)

    def send_msg(self, dest: int, seq: int, size: int) -> None:
        head = self.prefix.get(dest)
        if head is None:
            head = self.prefix[dest] = b"<message type='chat' to='u%d@%s'><body>" % (
                dest,
                self.host,
            )
        self.unacked.append(seq)
        self.write(b"%s%016x%s</body></message>%s" % (head, seq, PAD_HEX[: size - 16], R))

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        if self.state != RUNNING:
            buf = self._login(buf)
            if self.state != RUNNING:
                self.buf = buf
                return
        st = self.stats
        pos, n = 0, len(buf)
        stanzas = 0
        ack_asked = False
        while pos < n:
            lt = buf.find(b"<", pos)
            if lt < 0:
                pos = n  # whitespace keepalives
                break
            kind = buf[lt + 1 : lt + 3]
            if kind == b"me":  # <message ...>...<body>SEQ...</body></message>
                end = buf.find(b"</message>", lt)
                if end < 0:
                    pos = lt
                    break
                body = buf.find(b"<body>", lt, end)
                if body < 0 or b"'error'" in buf[lt:body]:  # a bounce, not a delivery
                    st.errors += 1
                else:
                    st.deliver(int(buf[body + 6 : body + 22], 16))
                stanzas += 1
                pos = end + 10
                continue
            end, complete = element(buf, lt)
            if not complete:
                pos = lt
                break
            if kind == b"a ":
                self._server_acked(int(attribute(buf[lt:end], b"h")))
            elif kind == b"r ":
                ack_asked = True
            elif kind in (b"pr", b"iq"):
                stanzas += 1
            elif kind == b"en":  # <enabled/>
                self.ready.set_result(None)
            elif kind in (b"st", b"fa"):  # stream error or failure
                st.errors += 1
            pos = end
        self.buf = buf[pos:]
        if stanzas or ack_asked:
            self.h_in += stanzas
            self.write(b"<a xmlns='urn:xmpp:sm:3' h='%d'/>" % self.h_in)

    def close(self) -> None:
        """End the stream first: a connection that just drops leaves a resumable XEP-0198
        session behind, which keeps taking the user's messages for minutes."""
        t = self.transport
        if t is not None and not t.is_closing():
            self._flush()
            t.write(b"</stream:stream>")
        super().close()

    def _server_acked(self, h: int) -> None:
        st, unacked = self.stats, self.unacked
        for _ in range(h - self.h_out):
            seq = unacked.popleft()
            if seq:
                st.server_ack(seq)
        self.h_out = h

    def _login(self, buf: bytes) -> bytes:
        """Advance the login; returns what is left of buf for the next step."""
        while True:
            if self.state in (FEATURES, FEATURES2):
                end = buf.find(b"</stream:features>")
                if end < 0:
                    return buf
                buf = buf[end + 18 :]
                if self.state == FEATURES:
                    first = base64.b64encode(self.scram.first())
                    self.write(
                        b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' "
                        b"mechanism='SCRAM-SHA-1'>%s</auth>" % first
                    )
                    self.state = CHALLENGE
                else:
                    self.write(
                        b"<iq type='set' id='bind'><bind xmlns='urn:ietf:params:xml:ns:"
                        b"xmpp-bind'><resource>bench</resource></bind></iq>"
                    )
                    self.state = BOUND
            elif self.state in (CHALLENGE, SUCCESS):
                if b"<failure" in buf:
                    self._fail(buf)
                    return b""
                tag = b"challenge" if self.state == CHALLENGE else b"success"
                start = buf.find(b"<" + tag)
                if start < 0:
                    return buf
                end, complete = element(buf, start)
                if not complete:
                    return buf
                payload = base64.b64decode(text_of(buf[start:end], tag))
                buf = buf[end:]
                if self.state == CHALLENGE:
                    final = base64.b64encode(self.scram.final(payload))
                    self.write(
                        b"<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>%s</response>" % final
                    )
                    self.state = SUCCESS
                else:
                    self.scram.verify(payload)
                    self.write(STREAM % self.host)  # RFC 6120 6.4.6: restart the stream
                    self.state = FEATURES2
            else:  # BOUND: the bind result, then SM and presence
                end = buf.find(b"</iq>")
                if end < 0:
                    if b"type='error'" in buf or b'type="error"' in buf:
                        self._fail(buf)
                        return b""
                    return buf
                self.write(b"<enable xmlns='urn:xmpp:sm:3'/><presence/>")
                self.unacked.append(0)  # the presence counts in the server's h
                self.state = RUNNING
                return buf[end + 5 :]

    def _fail(self, buf: bytes) -> None:
        if not self.ready.done():
            self.ready.set_exception(RuntimeError(f"XMPP login failed: {buf[:300]!r}"))
        self.close()
