"""``--run`` on every pod of a workload, each through its node's agent (issue 21).

A room between cli/ and agent/ (it speaks agent's ``protocol``): ``members`` and ``follow``
decide which pods are traced and where (pure, over pod JSON); ``merge`` labels events and
merges aggregates (pure); ``agents`` finds a node's agent and reaches it; ``session`` is one
connection to one agent, ``local`` a pod on this very node; ``client`` runs them all at once
and prints; ``command`` is the CLI's entry. Only ``resolvers/kubernetes.py`` talks to the API
server.
"""

__all__ = ["agents", "client", "command", "follow", "local", "members", "merge", "session"]
