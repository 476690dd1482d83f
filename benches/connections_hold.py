#!/usr/bin/env python3
"""Hold COUNT connections to a server and report when the server closes them.

  connections_hold.py HOST:PORT COUNT MODE [MAX_SECONDS]

MODE `half`: each connection sends the first line of a request head and stops (a
slow-loris client). MODE `idle`: each sends one complete keep-alive GET /health, reads
the answer and stays idle. The script then waits (epoll) until the server closes every
connection or MAX_SECONDS pass, and prints one line of key=value figures: how many were
opened, refused, closed by the server, and the seconds from each connection's last byte
sent to its close (p0/p50/p100). Each process can hold up to its open-file limit less a
few, so 20,000 connections need two processes.
"""
import selectors, socket, sys, time

addr, count, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
max_secs = float(sys.argv[4]) if len(sys.argv) > 4 else 120.0
host, port = addr.rsplit(":", 1)
port = int(port)


def read_answer(s):
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(4096)
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    head, body = buf.split(b"\r\n\r\n", 1)
    length = 0
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            length = int(v)
    while len(body) < length:
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionError("closed")
        body += chunk
    return int(head[9:12])


sel = selectors.DefaultSelector()
sent_at = {}
opened = refused = failed = 0
t0 = time.monotonic()
for i in range(count):
    s = socket.socket()
    try:
        s.connect((host, port))
        if mode == "half":
            s.sendall(b"GET /health HTTP/1.1\r\nHost: bench\r\n")
        else:
            s.sendall(b"GET /health HTTP/1.1\r\nHost: bench\r\n\r\n")
            if read_answer(s) != 200:
                refused += 1
                s.close()
                continue
    except OSError:
        failed += 1
        s.close()
        continue
    opened += 1
    s.setblocking(False)
    sent_at[s.fileno()] = time.monotonic()
    sel.register(s, selectors.EVENT_READ)
held_at = time.monotonic()
print(f"mode={mode} opened={opened} in {held_at - t0:.1f}s refused={refused} failed={failed}", flush=True)
waits = []
unexpected = 0
while sent_at and time.monotonic() - held_at < max_secs:
    for key, _ in sel.select(timeout=1.0):
        s = key.fileobj
        try:
            data = s.recv(4096)
        except OSError:
            data = b""
        if data:
            # An answer before the close (a 503 at the cap): read on until the close.
            unexpected += 1
            continue
        waits.append(time.monotonic() - sent_at.pop(s.fileno()))
        sel.unregister(s)
        s.close()
waits.sort()
q = lambda p: waits[min(len(waits) - 1, int(p * len(waits)))] if waits else float("nan")
print(f"mode={mode} closed_by_server={len(waits)} still_open={len(sent_at)} data_before_close={unexpected} "
      f"secs_from_last_send_to_close: min={q(0):.1f} p50={q(0.5):.1f} max={q(1.0) if waits else float('nan'):.1f}",
      flush=True)
