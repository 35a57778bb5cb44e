"""``python -m lorascope.cli``: the command line, as the ``lorascope`` script runs it."""

from . import main

main()
