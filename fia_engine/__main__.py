import sys

from .command_line import exit_on_user_error

with exit_on_user_error():  # Ctrl-C while torch is imported ends in one line too
    from .cli import main

    code = main()
sys.exit(code)
