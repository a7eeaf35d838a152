"""A small closed-loop HTTP/1.1 load generator (asyncio + uvloop, keep-alive, raw sockets) that keeps
each response's status with its latency, so the latency of accepted (200) requests can be reported
apart from refused (503) ones — which ``wrk`` cannot do. Cheaper per request than an HTTP client
library, but still Python: it shares the cores with the server, so wrk remains the throughput yardstick.
"""

from __future__ import annotations

import asyncio
import time

import numpy as np


class _Connection(asyncio.Protocol):
    def __init__(self, requests: list[bytes], record, stop_at: float, done: asyncio.Future):
        self.requests, self.record, self.stop_at, self.done = requests, record, stop_at, done
        self.buffer, self.sent, self.n = b"", 0.0, 0

    def connection_made(self, transport):
        self.transport = transport
        self._send()

    def _send(self):
        if time.perf_counter() >= self.stop_at:
            self.transport.close()
            if not self.done.done():
                self.done.set_result(None)
            return
        self.sent = time.perf_counter()
        self.transport.write(self.requests[self.n % len(self.requests)])
        self.n += 1

    def data_received(self, data: bytes):
        self.buffer += data
        head_end = self.buffer.find(b"\r\n\r\n")
        if head_end < 0:
            return
        head = self.buffer[:head_end].decode("latin-1").lower()
        length = int(head.split("content-length:", 1)[1].split("\r\n", 1)[0])
        if len(self.buffer) < head_end + 4 + length:
            return
        self.record(int(head[9:12]), (time.perf_counter() - self.sent) * 1000)
        self.buffer = self.buffer[head_end + 4 + length :]
        self._send()

    def connection_lost(self, exc):
        if not self.done.done():
            self.done.set_result(None)


def run(host: str, port: int, path: str, bodies: list[bytes], concurrency: int, seconds: float) -> dict:
    """``concurrency`` keep-alive connections sending ``bodies`` in turn for ``seconds``."""
    import uvloop

    requests = [
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(b)}\r\n\r\n".encode()
        + b
        for b in bodies
    ]
    results: dict[int, list[float]] = {}

    def record(status: int, ms: float) -> None:
        results.setdefault(status, []).append(ms)

    async def main():
        loop = asyncio.get_running_loop()
        stop_at = time.perf_counter() + seconds
        done = [loop.create_future() for _ in range(concurrency)]
        for n in range(concurrency):
            shift = requests[n:] + requests[:n]
            await loop.create_connection(lambda n=n, s=shift: _Connection(s, record, stop_at, done[n]), host, port)
        await asyncio.gather(*done)

    started = time.perf_counter()
    uvloop.run(main())
    elapsed = time.perf_counter() - started
    out = {"seconds": round(elapsed, 2), "requests_per_s": round(sum(map(len, results.values())) / elapsed, 1)}
    for status, latencies in sorted(results.items()):
        out[str(status)] = {
            "requests": len(latencies),
            "p50_ms": round(float(np.percentile(latencies, 50)), 3),
            "p99_ms": round(float(np.percentile(latencies, 99)), 3),
        }
    return out
