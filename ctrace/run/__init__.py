"""``--run``: the chosen command started and watched (watch), a child waited for and stopped
(runner), the stacks action's output named (stacks, symbolize, flame), and perf's path (perf).

Others import the modules; watch.trace is the one call cli makes.
"""

__all__ = ["flame", "perf", "runner", "stacks", "symbolize", "watch"]
