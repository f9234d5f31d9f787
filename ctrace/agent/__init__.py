"""``ctrace agent``: the node agent's narrow API (PROTOCOL.md, issue 21).

``protocol.py`` is the wire format, pure and shared with the client; the server and
the trace it runs as a child process live beside it.
"""
