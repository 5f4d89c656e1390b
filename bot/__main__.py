import sys

from bot.server import main

sys.exit(main(sys.argv[1:]))
