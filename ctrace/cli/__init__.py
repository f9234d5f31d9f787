"""The command line: parsing (parser), one function per subcommand (commands), completion,
and the output formats (render, text). Nothing imports cli/; its face is the entry point.

Rooms, top to bottom (tests/test_layout.py keeps imports going down only):
cli -> run -> plan -> bpftrace -> elf, plan -> resolvers -> proc; all may use the ground
floor (errors, record, model, progress).
"""

from ctrace.cli.main import main, run

__all__ = ["main", "run"]
