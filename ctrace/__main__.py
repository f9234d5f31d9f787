from ctrace.cli.main import run

run()
