"""The ``sami`` client: commands that drive a Sami server over its HTTP API, from a terminal or CI.

It talks to ``/api/v1`` only (never to the database), so it works from any machine that can reach
the server, with a scoped token.
"""
