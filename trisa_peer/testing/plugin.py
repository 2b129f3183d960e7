"""pytest plugin (entry point ``trisa_peer``): a running TRISA network for your tests.

Installing trisa-peer makes the ``trisa_network`` fixture available to every pytest
session. It starts, once per session, a :class:`~trisa_peer.testing.network.SimulatedNetwork`
on 127.0.0.1 -- a CA, the Sectigo-compatible service, a directory, and the nodes
``alice``, ``bob``, ``charlie`` (registered), ``mallory`` (never registered) and ``evil``
(foreign CA) -- and stops it at the end::

    def test_alice_pays_bob(trisa_network):
        from trisa_peer.testing.cast import BOOK
        from trisa_peer.testing.policies import originator_payload
        alice, bob = trisa_network.alice, trisa_network.bob
        payload = originator_payload(BOOK.wallets_of(alice.common_name)[1],
                                     BOOK.wallets_of(bob.common_name)[0], sent_at=now)
        result = alice.send(bob.common_name, payload)
        assert result.state == "accepted"

Your own VASP joins with its own handler (registered through the same flow, once per
session: the network is shared)::

    @pytest.fixture(scope="session")
    def carol(trisa_network):
        return trisa_network.join("carol.vasp.test", handler=my_handler)

Imports are deferred so that sessions which do not use the fixture pay nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest


@pytest.fixture(scope="session")
def trisa_network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A started simulated TRISA network, shared by the whole test session."""
    from .network import SimulatedNetwork

    with SimulatedNetwork(tmp_path_factory.mktemp("trisa-network")) as network:
        yield network
