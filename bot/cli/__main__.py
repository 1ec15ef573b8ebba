"""``python -m bot.cli``: the ``sami`` command."""

from bot.cli import main

main()
