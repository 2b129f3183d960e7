"""Test support for users of trisa-peer: a simulated TRISA network and a pytest plugin."""
