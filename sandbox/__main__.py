import os
import sys

from sandbox.runner import main

code = main(sys.argv[1:])
if sys.argv[1:2] == ["up"]:
    # `up` has stopped everything it started (the bot, Prometheus, the servers) and said so:
    # end the process now. A thread a library left behind (not daemon) or an exit handler
    # waiting on one must not keep a stopped sandbox alive after SIGTERM (#29).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
sys.exit(code)
