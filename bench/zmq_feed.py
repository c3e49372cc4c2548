"""ZMQ price feed throughput: ticks/s published by the simulator's ``Publisher`` (JSON v1 encoding)
and received + decoded by a SUB socket in another thread, over TCP loopback, no loss allowed.

Peer: the same PUB/SUB pair moving pre-encoded bytes (no encode/decode), i.e. the transport ceiling.
``python -m bench zmq_feed [--quick]``; target >= 50,000 ticks/s (issue 3).
"""

from __future__ import annotations

import json
import multiprocessing
import sys
import time
from typing import Any

import zmq

from simulator.feed import Publisher, Tick, decode_tick, encode_tick

SYMBOLS = ["AAPL", "MSFT", "NVDA", "AMZN", "GOOGL", "META", "TSLA", "SPY", "QQQ", "JPM"]
TARGET_TICKS_PER_S = 50_000
TIMEOUT_S = 60.0


def _subscriber(url: str, n: int, decode: bool, conn: Any) -> None:
    """Child process: receive (and decode) ``n`` ticks; report (received, t_first, t_last)."""
    ctx: zmq.Context[Any] = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.RCVHWM, 0)
    sub.setsockopt(zmq.LINGER, 0)
    sub.connect(url)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    conn.send("ready")
    # Slow joiner: the parent sends WARM frames until we see one; drain them, then count.
    sub.setsockopt(zmq.RCVTIMEO, 20_000)
    warm = False
    while True:
        topic, body = sub.recv_multipart()
        if topic != b"WARM":
            break
        if not warm:
            warm = True
            conn.send("warm")
    received, t_first = 1, time.perf_counter()
    if decode:
        decode_tick(topic, body)
    sub.setsockopt(zmq.RCVTIMEO, 3_000)
    recv = sub.recv_multipart
    try:
        while received < n:
            topic, body = recv()
            if decode:
                decode_tick(topic, body)
            received += 1
    except zmq.Again:
        pass
    conn.send((received, t_first, time.perf_counter()))
    sub.close()
    ctx.term()


def _measure(n: int, *, encode: bool) -> dict[str, Any]:
    """Publisher in this process, subscriber in another (as simulator and manager are)."""
    mp = multiprocessing.get_context("spawn")
    ctx: zmq.Context[Any] = zmq.Context()
    pub = Publisher("tcp://127.0.0.1:*", context=ctx, sndhwm=0)  # unbounded queue: measure throughput, not drops
    parent, child = mp.Pipe()
    proc = mp.Process(target=_subscriber, args=(pub.url, n, encode, child), daemon=True)
    proc.start()
    try:
        parent.recv()  # subscribed
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            pub.socket.send_multipart((b"WARM", b"{}"))
            if parent.poll(0.02):
                parent.recv()  # the subscription is live
                break
        ts0 = time.time_ns()
        fixed = encode_tick(Tick("AAPL", 190.12, 190.11, 190.13, 100, ts0))
        t0 = time.perf_counter()
        if encode:
            publish = pub.publish
            for i in range(n):
                price = 100.0 + (i % 1000) * 0.01
                publish(Tick(SYMBOLS[i % 10], price, price - 0.01, price + 0.01, 100, ts0 + i))
        else:
            send = pub.socket.send_multipart
            for _ in range(n):
                send(fixed)
        t_pub = time.perf_counter() - t0
        if not parent.poll(TIMEOUT_S):
            raise RuntimeError("subscriber did not finish")
        received, t_first, t_last = parent.recv()
    finally:
        proc.join(timeout=10)
        if proc.is_alive():
            proc.kill()
        pub.close()
        ctx.term()
    elapsed = t_last - min(t0, t_first)
    return {"sent": n, "received": received, "elapsed_s": round(elapsed, 4), "publish_only_s": round(t_pub, 4),
            "ticks_per_s": received / elapsed if elapsed > 0 else 0.0}


def run(quick: bool) -> list[dict[str, Any]]:
    n = 100_000 if quick else 500_000
    ours = _measure(n, encode=True)
    peer = _measure(n, encode=False)
    return [
        {
            "name": "zmq_feed_ticks_per_s",
            "value": round(ours["ticks_per_s"]),
            "unit": "ticks/s",
            "target": TARGET_TICKS_PER_S,
            "meets_target": ours["ticks_per_s"] >= TARGET_TICKS_PER_S and ours["received"] == n,
            "lost": n - ours["received"],
            "ticks": n,
            "elapsed_s": ours["elapsed_s"],
            "peer": "raw zmq PUB/SUB, pre-encoded bytes",
            "peer_value": round(peer["ticks_per_s"]),
            "ratio": round(ours["ticks_per_s"] / peer["ticks_per_s"], 3) if peer["ticks_per_s"] else None,
            "encoding": "json v1 (docs/price_feed.md)",
        }
    ]


if __name__ == "__main__":
    for result in run("--quick" in sys.argv):
        print(json.dumps(result))
