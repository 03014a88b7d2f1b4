"""``python -m durable_iterator subscribe|publish ...``: see ``durable_iterator._cli``."""

from ._cli import run

if __name__ == "__main__":
    run()
