"""`python -m pool QUEUE` is `ma-worker run QUEUE`."""

import sys

from pool.cli import main

if __name__ == "__main__":
    sys.exit(main(["run", *sys.argv[1:]]))
