"""Each way of running a call in another warm process, behind one small interface.

``call(fn, *args)`` submits one call and waits for its result; ``map(fn, items)``
submits them all, then collects (pipelined); ``close()`` ends the peer.
"""
from __future__ import annotations

import multiprocessing
import os
import socket
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Callable

from common import Daemon


class Peer:
    name = "?"
    pipelined = True  # map() really submits everything before collecting

    def call(self, fn: Callable, *args: Any) -> Any:
        raise NotImplementedError

    def map(self, fn: Callable, items: list) -> list:
        return [self.call(fn, x) for x in items]

    def close(self) -> None:
        pass


class WarmdPeer(Peer):
    name = "warmd"

    def __init__(self, daemon: Daemon) -> None:
        self.client = daemon.client()

    def call(self, fn, *args):
        return self.client.submit(fn, *args).result()

    def map(self, fn, items):
        return list(self.client.map(fn, items))

    def close(self) -> None:
        self.client.close()


class WarmdSessionPeer(Peer):
    """warmd through a session: one held worker, each call straight to it."""
    name = "warmd session"

    def __init__(self, daemon: Daemon) -> None:
        self.client = daemon.client()
        self.session = self.client.session(name="bench")

    def call(self, fn, *args):
        return self.session.submit(fn, *args).result()

    def map(self, fn, items):
        return list(self.session.map(fn, items))

    def close(self) -> None:
        self.session.close()
        self.client.close()


class PoolPeer(Peer):
    """concurrent.futures.ProcessPoolExecutor, spawn context, held open."""
    name = "ProcessPoolExecutor"

    def __init__(self, workers: int = 1) -> None:
        self.pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
        self.pool.submit(int).result()  # start the worker and wait for it

    def call(self, fn, *args):
        return self.pool.submit(fn, *args).result()

    def map(self, fn, items):
        return list(self.pool.map(fn, items))

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


class WarmpoolPeer(Peer):
    """warmpool.WarmPool: one warm worker with a spare; run() blocks, so no pipelining."""
    name = "warmpool"
    pipelined = False

    def __init__(self) -> None:
        import warmpool
        self.pool = warmpool.WarmPool(max_tasks=10**9, keep_spare=True)

    def call(self, fn, *args):
        if args:
            return self.pool.run(_apply, timeout=600, fn=fn, args=args)
        return self.pool.run(fn, timeout=600)

    def close(self) -> None:
        self.pool.shutdown()


def _apply(fn, args):
    return fn(*args)


class DaskPeer(Peer):
    """dask.distributed LocalCluster: processes, ``workers`` workers of one thread."""
    name = "dask"

    def __init__(self, workers: int = 1) -> None:
        import logging

        saved = dict(os.environ)
        from dask.distributed import Client, LocalCluster
        logging.getLogger("distributed").setLevel(logging.ERROR)
        self.cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                    dashboard_address=None, silence_logs=logging.ERROR)
        self.client = Client(self.cluster)
        self.client.submit(int, pure=False).result()
        # distributed sets MALLOC_TRIM_THRESHOLD_ and *_NUM_THREADS in this process's
        # environment for its workers; every process started later would inherit them
        # (the trim threshold made numpy code in other peers' workers twice as slow).
        os.environ.clear()
        os.environ.update(saved)

    def call(self, fn, *args):
        return self.client.submit(fn, *args, pure=False).result()

    def map(self, fn, items):
        return self.client.gather(self.client.map(fn, items, pure=False))

    def close(self) -> None:
        self.client.close()
        self.cluster.close()


_ECHO = ("import socket, sys\n"
         "s = socket.socket(fileno=int(sys.argv[1]))\n"
         "while True:\n"
         "    d = s.recv(65536)\n"
         "    if not d: break\n"
         "    s.sendall(d)\n")


class SocketFloor(Peer):
    """The floor: one request and its response over an AF_UNIX socketpair to another process."""
    name = "floor: socketpair round trip"

    def __init__(self, size: int = 64) -> None:
        self.sock, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.proc = subprocess.Popen([sys.executable, "-c", _ECHO, str(child.fileno())],
                                     pass_fds=(child.fileno(),))
        child.close()
        self.message = b"x" * size

    def call(self, fn=None, *args):
        self.sock.sendall(self.message)
        got = 0
        while got < len(self.message):
            got += len(self.sock.recv(65536))

    def map(self, fn, items, window: int = 64):
        # Pipelined: up to ``window`` requests in flight (all at once would fill both
        # socket buffers and deadlock against the echoing peer).
        size, sent, got, want = len(self.message), 0, 0, len(self.message) * len(items)
        while got < want:
            while sent < len(items) and (sent * size - got) < window * size:
                self.sock.sendall(self.message)
                sent += 1
            got += len(self.sock.recv(1 << 16))
        return [None] * len(items)

    def close(self) -> None:
        self.sock.close()
        self.proc.wait()


class PickleFloor(Peer):
    """The floor: cloudpickle dumps + loads of the same call, in process."""
    name = "floor: cloudpickle dumps+loads"

    def call(self, fn, *args):
        import cloudpickle
        cloudpickle.loads(cloudpickle.dumps((fn, args, {})))
