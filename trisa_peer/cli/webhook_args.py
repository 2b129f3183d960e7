"""``serve --webhook URL`` and its options: the back office decides incoming transfers.

:func:`add_webhook_args` adds the flags; :func:`webhook_handler` checks them and builds
the handler (``None`` without ``--webhook``), loading ``trisa_peer.network.webhook`` (and
``http.client``) only then. Checked here: the options go together (a key file is
required, ``--policy`` is not allowed beside ``--webhook``) and the time budget
(timeout x tries) stays under the 10 s a peer waits for a Transfer. The URL, the TLS
files and the key file are checked by the modules that use them.
"""

from __future__ import annotations

import argparse
from typing import Any

from ..errors import UsageError
from .options import positive_float, positive_int

__all__ = ["PEER_DEADLINE", "add_webhook_args", "webhook_handler"]

#: Seconds a TRISA peer usually waits for a Transfer (this node's own client: 10 s).
PEER_DEADLINE = 10.0


def add_webhook_args(parser: Any) -> None:
    group = parser.add_argument_group("back-office webhook (docs/webhook.md)")
    group.add_argument("--webhook", metavar="URL",
                       help="POST each incoming transfer to URL and let its JSON answer "
                       "decide: https://..., http:// to a loopback address, or unix:///PATH")
    group.add_argument("--webhook-secret-file", metavar="FILE",
                       help="HMAC keys, one 'KEY_ID SECRET' a line, the last one signs "
                       "(mode 0600; required with --webhook)")
    group.add_argument("--webhook-ca", metavar="FILE",
                       help="CA bundle to verify the back office's certificate (default: "
                       "the system's roots)")
    group.add_argument("--webhook-cert", metavar="FILE",
                       help="client certificate (PEM) for mTLS to the back office")
    group.add_argument("--webhook-key", metavar="FILE",
                       help="private key (PEM, unencrypted, 0600) of --webhook-cert")
    group.add_argument("--webhook-timeout", metavar="SECONDS", type=positive_float,
                       default=None, help="seconds one try may take in total (default 3.5)")
    group.add_argument("--webhook-tries", metavar="N", type=positive_int, default=None,
                       help="tries per transfer, the second only after a transient failure "
                       "(default 2); timeout x tries must stay under 10 s")


def webhook_handler(args: argparse.Namespace) -> Any:
    """The webhook handler the options ask for, or None without ``--webhook``."""
    url = getattr(args, "webhook", None)
    extra = [f"--{name.replace('_', '-')}" for name in (
        "webhook_secret_file", "webhook_ca", "webhook_cert", "webhook_key",
        "webhook_timeout", "webhook_tries") if getattr(args, name, None) is not None]
    if not url:
        if extra:
            raise UsageError(f"{extra[0]} needs --webhook")
        return None
    if getattr(args, "policy", None):
        raise UsageError("--webhook and --policy both decide transfers; give one")
    if not args.webhook_secret_file:
        raise UsageError("--webhook needs --webhook-secret-file (the HMAC key file)")
    from ..network.webhook import (
        DEFAULT_ATTEMPTS,
        DEFAULT_TIMEOUT,
        WebhookConfig,
        WebhookHandler,
        parse_target,
    )
    from ..network.webhook_sign import load_keys

    parse_target(url)  # a refused URL is a usage error before any file is read
    timeout = args.webhook_timeout or DEFAULT_TIMEOUT
    tries = args.webhook_tries or DEFAULT_ATTEMPTS
    if timeout * tries + 0.25 * (tries - 1) >= PEER_DEADLINE:
        raise UsageError(f"--webhook-timeout x --webhook-tries must stay under the "
                         f"{PEER_DEADLINE:g} s a peer waits (got {timeout:g} x {tries})")
    config = WebhookConfig(url=url, keys=load_keys(args.webhook_secret_file),
                           ca=args.webhook_ca, cert=args.webhook_cert, key=args.webhook_key,
                           timeout=timeout, attempts=tries)
    return WebhookHandler(config)
