"""``ctrace agent`` and ``--run -o json``: the node agent's narrow API (PROTOCOL.md, issue 21).

A room between cli/ and run/: ``protocol`` is the wire format (pure, with ``checks``),
shared with the client; ``stream`` and ``local`` run a trace and print its lines
(``--run -o json``, the agent's child); ``program`` binds a user's ``-e`` program;
``server``, ``session`` and ``placement`` are the agent. Its child's entry point is
``ctrace/_agent_child.py``, beside ``__main__`` above cli (it runs the command line).
"""

__all__ = ["checks", "local", "placement", "program", "protocol", "server", "session", "stream"]
