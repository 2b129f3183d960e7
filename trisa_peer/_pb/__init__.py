"""Generated protobuf and gRPC modules (by scripts/gen_protos.py from protos/).

Do not edit: run ``make protos``. This package is excluded from lint and type
checking; CI regenerates it with ``scripts/gen_protos.py --check``.
"""
