import sys

from sandbox.runner import main

sys.exit(main(sys.argv[1:]))
