"""`python -m bench.report RUN_DIR [RUN_DIR ...] [--out DIR]`: the same as `bench report`."""
from __future__ import annotations

import argparse
import sys

from .cli import add_arguments, main


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # bad flags: one sentence, exit 2, as `bench` does
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n")


if __name__ == "__main__":
    parser = _Parser(prog="bench report", description="Figures and an HTML page from bench run folders.")
    add_arguments(parser)
    sys.exit(main(parser.parse_args()))
