"""A back office for ``trisa-peer serve --webhook`` in the standard library only.

    python docs/backoffice.py --listen 127.0.0.1:8080 --keys webhook.key

It checks each request as docs/webhook.md says (key id, HMAC-SHA256 over
``timestamp.body``, 300 s of clock skew; else 401), then decides by the
transaction's amount: below 1,000 accept, up to 10,000 pending (a manual review,
decided later through the node's HTTP API), above that reject. It prints one line
per request (envelope id and decision), never the payload. An example, not a
compliance system: it keeps no record and does not refuse replays.
"""

import argparse
import hashlib
import hmac
import json
import time
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def load_keys(path):
    """The node's key file: ``KEY_ID SECRET`` a line, ``#`` comments."""
    keys = {}
    for line in open(path, encoding="utf-8"):
        if line.strip() and not line.startswith("#"):
            key_id, secret = line.split()
            keys[key_id] = secret.encode()
    return keys


def decide(transfer):
    amount = float(transfer["payload"]["transaction"].get("amount", 0))
    if amount < 1000:
        return {"decision": "accept"}
    if amount <= 10000:
        deadline = datetime.now(UTC) + timedelta(days=1)
        return {"decision": "pending", "deadline": deadline.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "message": "held for manual review"}
    return {"decision": "reject", "code": "HIGH_RISK", "message": "amount over our limit"}


class BackOffice(BaseHTTPRequestHandler):
    keys = {}

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        ts = self.headers.get("Trisa-Webhook-Timestamp", "")
        secret = self.keys.get(self.headers.get("Trisa-Webhook-Key-Id", ""))
        signature = self.headers.get("Trisa-Webhook-Signature", "")
        if (secret is None or not ts.isdigit() or abs(time.time() - int(ts)) > 300
                or not hmac.compare_digest(signature, "v1=" + hmac.new(
                    secret, ts.encode() + b"." + body, hashlib.sha256).hexdigest())):
            print("refused a request: bad key id, timestamp or signature", flush=True)
            return self.answer(401, {"error": "unauthenticated"})
        transfer = json.loads(body)
        answer = decide(transfer)
        print(f"{transfer['envelope_id']}: {answer['decision']}", flush=True)
        self.answer(200, answer)

    def answer(self, status, doc):
        data = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):  # the default logs every request line
        pass


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default="127.0.0.1:8080", metavar="HOST:PORT")
    parser.add_argument("--keys", required=True, help="the node's --webhook-secret-file")
    args = parser.parse_args()
    BackOffice.keys = load_keys(args.keys)
    host, port = args.listen.rsplit(":", 1)
    server = ThreadingHTTPServer((host, int(port)), BackOffice)
    print(f"back office listening on http://{args.listen}/", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
