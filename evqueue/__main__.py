"""``python -m evqueue`` runs the daemon (same as the ``evqueue`` command)."""

from evqueue.cli import main

main()
