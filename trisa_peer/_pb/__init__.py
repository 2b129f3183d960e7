"""Generated protobuf and gRPC modules (by scripts/gen_protos.py from protos/).

Do not edit: run ``make protos``. The modules are excluded from lint and type
checking; mypy reads their ``.pyi`` stubs (mypy-protobuf). CI regenerates both
with ``scripts/gen_protos.py --check``.
"""
