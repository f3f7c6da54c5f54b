"""``python -m ked`` runs the command line."""

from ked.cli import main

main()
