"""SimulatedNetwork.join: a user's own VASP, with its own handler, joins the network.

Runs against the session's ``trisa_network`` (real CA, Sectigo-compatible service,
directory and nodes on 127.0.0.1). Names are unique to this module: the network is
shared by the whole session.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from trisa_peer.errors import ConfigurationError, TrisaPeerError
from trisa_peer.network.handler import Accept, Incoming, Reject
from trisa_peer.testing.cast import BOOK
from trisa_peer.testing.network import SimulatedNetwork
from trisa_peer.testing.policies import originator_payload

SEEN: list[str] = []


def joiner_handler(incoming: Incoming) -> Accept | Reject:
    SEEN.append(incoming.peer.common_name)
    if incoming.peer.common_name == "charlie.vasp.test":
        return Reject(90, "joiner does not deal with charlie", retry=False)
    return Accept()


@pytest.fixture(scope="module")
def joiner(trisa_network: Any) -> Any:
    return trisa_network.join("joiner.vasp.test", handler=joiner_handler)


def _payload(network: Any) -> Any:
    alice, bob = network.alice, network.bob
    return originator_payload(BOOK.wallets_of(alice.common_name)[1],   # SendFull
                              BOOK.wallets_of(bob.common_name)[0],     # SyncRepair
                              sent_at=datetime.now(UTC))


def test_a_joined_vasp_is_registered_and_reached_by_name(trisa_network: Any, joiner: Any) -> None:
    assert trisa_network.joiner is joiner
    assert joiner.common_name == "joiner.vasp.test" and joiner.vasp_id
    SEEN.clear()
    result = trisa_network.alice.send(joiner.common_name, _payload(trisa_network))
    assert result.state == "accepted"
    assert SEEN == ["alice.vasp.test"]


def test_the_joined_vasps_handler_decides(trisa_network: Any, joiner: Any) -> None:
    """The twin of the acceptance above: the same handler refuses charlie."""
    SEEN.clear()
    result = trisa_network.charlie.send(joiner.common_name, _payload(trisa_network))
    assert result.state == "rejected"
    assert result.error is not None and result.error.code == 90
    assert SEEN == ["charlie.vasp.test"]


def test_a_joined_vasp_sends_to_the_cast(trisa_network: Any, joiner: Any) -> None:
    result = joiner.send(trisa_network.bob.common_name, _payload(trisa_network))
    assert result.state == "accepted"


@pytest.mark.parametrize("name", ["joiner.vasp.test", "joiner.other.test", "bob.vasp.test"])
def test_a_taken_name_cannot_join(trisa_network: Any, joiner: Any, name: str) -> None:
    with pytest.raises(ConfigurationError, match="already a VASP of this network"):
        trisa_network.join(name, handler=joiner_handler)


def test_a_name_the_directory_refuses_cannot_join(trisa_network: Any) -> None:
    with pytest.raises(TrisaPeerError) as err:
        trisa_network.join("not a name", handler=joiner_handler)
    assert not isinstance(err.value, ConfigurationError)
    assert "common name" in str(err.value), str(err.value)
    assert not [k for k in trisa_network.resolve if k.startswith("not a name")]


def test_joining_a_network_not_started_is_refused(tmp_path: Any) -> None:
    with pytest.raises(ConfigurationError, match="start the simulated network"):
        SimulatedNetwork(tmp_path).join("late.vasp.test", handler=joiner_handler)
