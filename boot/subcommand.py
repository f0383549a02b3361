"""The ``python -m boot.<name>_cmd`` entry shared by the subcommands that run on their own."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Callable, NoReturn

from core.errors import FatalError

if TYPE_CHECKING:
    from boot.settings import Settings


def run_subcommand(main: Callable[[list[str], Settings], int]) -> NoReturn:
    """Load the settings, run ``main`` on the command line's arguments and exit with its code.

    Settings that cannot load (a bad value, an unreadable file) print one line and exit 2.
    """
    from boot.settings import load_settings

    try:
        loaded = load_settings()
    except FatalError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    raise SystemExit(main(sys.argv[1:], loaded))
