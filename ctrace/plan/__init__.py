"""From a target to probes: the request (request.Request) in, a plan (request.Plan) out.

targets.plan walks processes -> binaries (locate) -> matched functions (match) -> probes
(probes, through bpftrace/); framepointers warns when stacks will be short; ps lists what
``ps`` and ``ns`` show. Submodules are imported by name: the package imports nothing, so
``from ctrace.plan.request import Request`` stays light.
"""

__all__ = ["framepointers", "locate", "match", "probes", "ps", "request", "targets"]
