"""``python -m bayeslmm`` runs the command line."""

from .cli import entry

entry()
