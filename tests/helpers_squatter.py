"""A hostile "daemon": another user's process answering on a victim's socket path.

Run as the attacker by the socket-hijack tests. It speaks enough of warmd's
protocol to look real and hands back a "result" whose unpickling creates the
MARKER file, so a client that trusted it would run the attacker's code.

    python helpers_squatter.py SOCKET MARKER

It binds SOCKET (making its directory open to all, as a squatter would), prints
"ready", serves until its stdin closes, then prints what reached it as JSON.
"""
import json
import os
import pickle
import select
import socket
import sys

from warmd.protocol import FrameReader, encode


class Plant:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))  # unpickling creates the marker: code ran as the victim


def main() -> None:
    path, marker = sys.argv[1], sys.argv[2]
    os.makedirs(os.path.dirname(path), exist_ok=True)
    try:
        os.chmod(os.path.dirname(path), 0o777)
    except PermissionError:
        pass  # not ours: a directory prepared for us
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    os.chmod(path, 0o777)
    listener.listen(16)
    print("ready", flush=True)
    conns: dict[socket.socket, FrameReader] = {}
    seen = {"connections": 0, "bytes": 0, "frames": []}

    def accept() -> None:
        conn, _ = listener.accept()
        conns[conn] = FrameReader()
        seen["connections"] += 1

    def serve(conn: socket.socket) -> None:
        try:
            data = conn.recv(65536)
        except OSError:
            data = b""
        if not data:
            del conns[conn]
            conn.close()
            return
        seen["bytes"] += len(data)
        reader = conns[conn]
        reader.receive_data(data)
        for frame in reader.frames():
            seen["frames"].append(frame.type)
            if frame.type == "hello":
                conn.sendall(encode({"t": "welcome", "version": "0", "pid": os.getpid(),
                                     "started_by": "manual", "warm_packages": [],
                                     "max_frame": 1 << 20}))
            elif frame.type == "submit":
                conn.sendall(encode({"t": "accepted", "req": frame.get("req"), "job": "f00d"})
                             + encode({"t": "done", "job": "f00d", "state": "succeeded",
                                       "exit_status": 0, "error": None}, pickle.dumps(Plant(marker))))
            elif frame.get("req") is not None:
                conn.sendall(encode({"t": "ok", "req": frame.get("req")}))

    while True:
        ready, _, _ = select.select([listener, sys.stdin, *conns], [], [])
        if sys.stdin in ready and not sys.stdin.readline():
            break
        for r in ready:
            if r is listener:
                accept()
            elif r is not sys.stdin:
                serve(r)
    # Whatever a victim managed to send before it gave up is in the backlog or the buffers.
    listener.setblocking(False)
    while True:
        try:
            accept()
        except BlockingIOError:
            break
    for conn in list(conns):
        conn.setblocking(False)
        try:
            seen["bytes"] += len(conn.recv(1 << 20))
        except OSError:
            pass
    print(json.dumps(seen), flush=True)


if __name__ == "__main__":
    main()
