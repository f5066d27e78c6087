"""``python -m newsletter.cli``."""

from newsletter.cli import main

main()
