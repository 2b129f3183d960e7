"""HAProxy in front of node replicas for the reliability cases and benchmarks.

TCP mode with TLS passthrough: mTLS terminates at the node (the only place the peer's
certificate can be checked). The configuration is the README's "Deployment" example
(``docs/haproxy.cfg``) with its ports replaced; ``haproxy`` from the system packages.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path

from common import free_port, stop_process

#: the README's example, shipped in the clone: its ports are replaced, nothing else
EXAMPLE = Path(__file__).resolve().parent.parent / "docs" / "haproxy.cfg"


def config(port: int, backends: list[int]) -> str:
    """docs/haproxy.cfg with the frontend on ``port`` and one server line per backend."""
    lines = EXAMPLE.read_text().splitlines()
    out: list[str] = []
    servers = [line for line in lines if line.strip().startswith("server ")]
    template = servers[0]
    for line in lines:
        if line.strip().startswith("bind "):
            out.append(re.sub(r":\d+$", f":{port}", line))
        elif line.strip().startswith("server "):
            if line is servers[0]:
                for i, backend in enumerate(backends, 1):
                    text = re.sub(r"replica\d+", f"replica{i}", template)
                    out.append(re.sub(r":\d+ ", f":{backend} ", text))
        else:
            out.append(line)
    return "\n".join(out) + "\n"


class HAProxy:
    def __init__(self, work: Path, backends: list[int]) -> None:
        binary = shutil.which("haproxy")
        if binary is None:
            raise RuntimeError("haproxy is not installed (apt-get install haproxy)")
        self.port = free_port()
        path = work / "haproxy.cfg"
        path.write_text(config(self.port, backends))
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
