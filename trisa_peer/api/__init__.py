"""The back-office HTTP API (``trisa-peer serve --api-listen``).

``auth`` (bearer tokens from a private file), ``openapi`` (the OpenAPI document),
``app`` (the Starlette app over a node) and ``server`` (uvicorn on a thread). Importing
this package imports nothing: Starlette and uvicorn (the ``api`` extra) load only when
``app`` or ``server`` is imported, i.e. only when ``--api-listen`` is given.
"""
