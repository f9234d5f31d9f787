"""``--run`` on every pod of a workload, each through its node's agent (issue 21).

``members`` and ``follow`` decide which pods are traced and where (pure, over pod JSON);
``merge`` labels events and merges aggregates (pure); ``session`` is one connection to one
agent; ``client`` runs them all at once and prints. Only ``resolvers/kubernetes.py`` talks
to the API server.
"""
