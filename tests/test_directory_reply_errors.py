"""A directory that answers a Lookup with an error inside the reply (as upstream GDS
can, e.g. code 404) is read as "no such record", not as an outage; other codes stay
directory errors. Over a real gRPC server on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest

from trisa_peer._pb.trisa.gds.api.v1beta1 import api_pb2, api_pb2_grpc
from trisa_peer.directory.client import DirectoryClient
from trisa_peer.errors import DirectoryError, DirectoryNotFoundError, PeerNotRegisteredError
from trisa_peer.lookup import lookup_peer
from trisa_peer.steps import HandshakeStep, Reason


class _Answers(api_pb2_grpc.TRISADirectoryServicer):
    """Answers every Lookup with ``error`` inside an OK reply, as a foreign GDS may."""

    def __init__(self, code: int, message: str) -> None:
        self.code, self.message = code, message

    def Lookup(self, request: api_pb2.LookupRequest, context: Any) -> api_pb2.LookupReply:
        return api_pb2.LookupReply(error=api_pb2.Error(code=self.code, message=self.message))


@pytest.fixture
def directory() -> Iterator[Any]:
    servers: list[Any] = []

    def start(code: int, message: str) -> DirectoryClient:
        server = grpc.server(futures.ThreadPoolExecutor(2), options=[("grpc.so_reuseport", 0)])
        api_pb2_grpc.add_TRISADirectoryServicer_to_server(_Answers(code, message), server)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        servers.append(server)
        return DirectoryClient(f"127.0.0.1:{port}", insecure=True, timeout=5, cache_ttl=0)

    yield start
    for server in servers:
        server.stop(None)


def test_reply_error_404_is_no_such_record(directory: Any) -> None:
    client = directory(404, "could not find VASP by common name")
    with pytest.raises(DirectoryNotFoundError, match=r"\[404\] could not find VASP"):
        client.lookup(common_name="mallory.vasp.test")
    with pytest.raises(PeerNotRegisteredError) as err:
        lookup_peer(client, "mallory.vasp.test", step=HandshakeStep.BIND_CLIENT_RECORD)
    assert err.value.reason == Reason.NOT_REGISTERED


@pytest.mark.parametrize("code", [500, 503, 1])
def test_twin_other_reply_errors_are_directory_errors_not_not_found(
    directory: Any, code: int
) -> None:
    client = directory(code, "internal error")
    with pytest.raises(DirectoryError) as err:
        client.lookup(common_name="mallory.vasp.test")
    assert not isinstance(err.value, DirectoryNotFoundError)
    assert f"[{code}] internal error" in str(err.value)
