"""pytest plugin (entry point ``trisa_peer``): fixtures for integration tests.

The ``trisa_network`` fixture is defined in :mod:`trisa_peer.testing.fixtures` once the
simulated network exists; until then this plugin registers nothing.
"""
