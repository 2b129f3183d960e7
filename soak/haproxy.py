"""HAProxy in front of node replicas for the reliability cases and benchmarks.

TCP mode with TLS passthrough: mTLS terminates at the node (the only place the peer's
certificate can be checked). The configuration is the README's "Deployment" example
with loopback ports filled in; ``haproxy`` comes from the system packages.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

from common import free_port, stop_process

CONFIG = """\
global
    maxconn 4096

defaults
    mode tcp
    timeout connect 2s
    timeout client  330s
    timeout server  330s
    retries 3
    option redispatch

frontend trisa
    bind 127.0.0.1:{port}
    default_backend trisa_nodes

backend trisa_nodes
    balance roundrobin
{servers}
"""


class HAProxy:
    def __init__(self, work: Path, backends: list[int]) -> None:
        binary = shutil.which("haproxy")
        if binary is None:
            raise RuntimeError("haproxy is not installed (apt-get install haproxy)")
        self.port = free_port()
        servers = "\n".join(
            f"    server node{i} 127.0.0.1:{p} check inter 300ms fall 2 rise 2"
            for i, p in enumerate(backends, 1)
        )
        path = work / "haproxy.cfg"
        path.write_text(CONFIG.format(port=self.port, servers=servers))
        subprocess.run([binary, "-c", "-q", "-f", str(path)], check=True)
        self.proc = subprocess.Popen([binary, "-db", "-f", str(path)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     text=True)
        import socket

        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read() if self.proc.stderr else ""
                raise RuntimeError(f"haproxy exited: {err.strip()}")
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise RuntimeError("haproxy did not listen within 10 s")

    def stop(self) -> None:
        stop_process(self.proc)
