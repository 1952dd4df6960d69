"""`python -m taskyard.cli`, the same as the `taskyard` command."""

from taskyard.cli.main import main

main()
