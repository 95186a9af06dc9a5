"""``python -m bench.sendfloor [N]``: the kernel's cost of one small write per connection.

Opens N loopback TCP connections (``TCP_NODELAY``, as uvicorn sets), writes one
300-byte WebSocket text frame to each from one thread while nobody reads, five rounds,
and prints the wall and CPU microseconds per ``send()``. This is the floor under a
broadcast: the hub cannot deliver one frame to each of N connections in less than N
such writes (docs/benchmarks.md, "Writing frames without waking a task per frame").
"""

from __future__ import annotations

import resource
import socket
import sys
import time

FRAME = b"\x81\x7e\x01\x2c" + b"x" * 300  # a text frame of 300 bytes, unmasked


def main(n: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    n = min(n, (hard - 100) // 2)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4096)
    clients, servers = [], []
    for _ in range(n):
        clients.append(socket.create_connection(listener.getsockname()))
        server, _ = listener.accept()
        server.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        server.setblocking(False)
        servers.append(server)
    rounds = []
    for _ in range(5):
        wall, cpu = time.perf_counter(), time.process_time()
        for server in servers:
            server.send(FRAME)
        rounds.append(((time.perf_counter() - wall) / n * 1e6,
                       (time.process_time() - cpu) / n * 1e6))
        for client in clients:
            client.recv(65536)
    for sock in clients + servers + [listener]:
        sock.close()
    print(f"{n} connections; per send() (wall / CPU µs): "
          + ", ".join(f"{w:.1f} / {c:.1f}" for w, c in rounds))


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 4000)
