"""`python -m shulian` runs the same CLI as the `shulian` command."""

from shulian.cli import main

main()
