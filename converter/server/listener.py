"""The end of a listening socket in a graceful shutdown: no new connection is begun
(`refuse_new_connections`), the ones the kernel has begun are accepted (`accept_waiting`, with
`half_open` counting handshakes still under way), and only then does the socket close, so every
client is either served or refused, never reset after its request could have been sent."""

from __future__ import annotations

import asyncio
import logging
import socket
import sys
from collections.abc import Sequence
from typing import Any

log = logging.getLogger("openapi_mcp")

_SO_ATTACH_FILTER = 26  # linux/asm-generic/socket.h
_TURNS_TO_CONNECT = 10  # loop turns from accepting a socket to its protocol's connection_made (asyncio: 3)


def refuse_new_connections(listening: socket.socket) -> None:
    """Stop the kernel from starting new connections on `listening`, which stays open until the
    ones it has begun are accepted (accept_waiting): a client's SYN is dropped now (it sends it
    again after a second, and by then the socket is closed: the connect is refused, nothing was
    sent, and a balancer tries another replica).

    Linux: a socket filter that drops the SYNs that open a connection (SYN without ACK; it sees a
    packet from its TCP header on, where byte 13 holds the flags) and lets the rest through. A
    handshake under way is not a SYN: the client already had the SYN-ACK, counts itself connected
    and may have sent its request, so the ACK completing it must reach the kernel, which then
    queues the connection for accept_waiting (dropped, the handshake stays half-open and the
    closed socket resets the client after its request was sent). The backlog stays as it was: a
    full accept queue would drop those ACKs too. Elsewhere a backlog of one, which drops SYNs
    once full."""
    if sys.platform == "linux":
        import ctypes
        import struct

        code = [(0x30, 0, 0, 13),  # BPF_LD|BPF_B|BPF_ABS: the TCP flags
                (0x54, 0, 0, 0x12),  # BPF_ALU|BPF_AND|BPF_K: SYN|ACK
                (0x15, 0, 1, 0x02),  # BPF_JMP|BPF_JEQ|BPF_K: SYN alone (a new connection)?
                (0x06, 0, 0, 0),  # BPF_RET|BPF_K: dropped
                (0x06, 0, 0, 0xFFFFFFFF)]  # BPF_RET|BPF_K: kept whole
        program = ctypes.create_string_buffer(b"".join(struct.pack("HBBI", *op) for op in code))
        fprog = struct.pack("HP", len(code), ctypes.addressof(program))  # struct sock_fprog
        try:
            listening.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_FILTER, fprog)  # the kernel copies the program
            return
        except OSError as exc:  # pragma: no cover - a kernel without socket filters
            log.debug("could not filter new connections before closing the listener: %s", exc)
    try:
        listening.listen(0)
    except OSError as exc:  # pragma: no cover
        log.debug("could not stop new connections before closing the listener: %s", exc)


async def accept_waiting(servers: Sequence[Any], *, limit: float = 0.5) -> None:
    """Let the loop accept the connections waiting in the listening sockets' queues, and the ones
    whose handshake is still under way once it completes (at most `limit` s in all).

    The kernel completes a client's connect before the server accepts it, so a balancer may have
    sent a request on a connection still in the queue; closing the listening socket resets those
    connections, and a POST already sent is not sent to another replica (nginx answers 502).
    Accepted, they are drained like the others: served once, with `Connection: close`. A handshake
    whose SYN was answered before refuse_new_connections is one round trip from the queue (Linux:
    half_open counts them); one that does not complete within `limit` is reset."""
    import select

    listeners = [listening for server in servers for listening in server.sockets]
    fds = [listening.fileno() for listening in listeners]

    def queued() -> bool:
        return bool(select.select(fds, [], [], 0)[0])

    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    accepted = False
    while fds and loop.time() < deadline:
        if not queued():
            pending = half_open(listeners)
            if not queued():  # looked at again: a handshake that completed while counting is queued by now
                if not pending:
                    break
                await asyncio.sleep(0.005)  # their ACKs are on the way
                continue
        accepted = True
        await asyncio.sleep(0)  # the loop's accept callback runs on its next turn
    if accepted:  # asyncio makes the accepted connection a few turns later; closed before, it is dropped
        for _ in range(_TURNS_TO_CONNECT):
            await asyncio.sleep(0)


_NETLINK_SOCK_DIAG = 4  # linux/netlink.h
_SOCK_DIAG_BY_FAMILY = 20  # linux/sock_diag.h
_NLM_F_DUMP_REQUEST = 0x301  # NLM_F_REQUEST | NLM_F_DUMP
_NLMSG_ERROR, _NLMSG_DONE = 2, 3
_TCPF_SYN_RECV = 1 << 3 | 1 << 12  # TCP_SYN_RECV, TCP_NEW_SYN_RECV (a handshake's request sock)


def half_open(listeners: Sequence[Any]) -> int | None:
    """How many handshakes on these listening sockets' ports wait for the client's ACK (the SYN was
    answered), from the kernel's socket diagnostics (what `ss state syn-recv` shows, filtered by
    state in the kernel: about a millisecond per address family however many connections there
    are; a handshake has its listener's family, IPv4 clients of an IPv6 socket too). One answered
    with a SYN cookie (the kernel's answer to a SYN flood) leaves nothing to count: it is accepted
    if it completes while others are waited for. None: not known here."""
    if sys.platform != "linux":
        return None
    import struct

    ports: dict[int, set[int]] = {}
    for listening in listeners:
        ports.setdefault(listening.family, set()).add(listening.getsockname()[1])
    count = 0
    try:
        with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, _NETLINK_SOCK_DIAG) as diag:
            diag.settimeout(1.0)
            for family, wanted in ports.items():
                # struct nlmsghdr, then struct inet_diag_req_v2 (its inet_diag_sockid left empty)
                request = struct.pack("=BBBBI48x", family, socket.IPPROTO_TCP, 0, 0, _TCPF_SYN_RECV)
                diag.send(struct.pack("=IHHII", 16 + len(request), _SOCK_DIAG_BY_FAMILY, _NLM_F_DUMP_REQUEST, 0, 0)
                          + request)
                done = False
                while not done:
                    data = diag.recv(65536)
                    offset = 0
                    while offset + 16 <= len(data):
                        length, kind = struct.unpack_from("=IH", data, offset)
                        if kind == _NLMSG_ERROR:
                            return None
                        if kind == _NLMSG_DONE or length < 16:
                            done = True
                            break
                        # struct inet_diag_msg: family, state, timer, retrans, then the local port
                        if struct.unpack_from("!H", data, offset + 20)[0] in wanted:
                            count += 1
                        offset += (length + 3) & ~3
    except OSError:  # pragma: no cover - no sock_diag (CONFIG_INET_DIAG) in this kernel
        return None
    return count
