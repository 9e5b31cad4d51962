"""``python -m omniformer.bench``: the same as ``omniformer-bench``."""

from omniformer.bench.cli import main

if __name__ == "__main__":
    main()
