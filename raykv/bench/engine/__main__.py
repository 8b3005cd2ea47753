"""``python -m raykv.bench.engine [options]``: the same as ``raykv bench engine``; ``cli.main`` is the contract."""

import sys

from raykv.bench.engine.cli import main

if __name__ == "__main__":
    sys.exit(main())
