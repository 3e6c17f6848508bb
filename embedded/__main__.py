"""``python -m embedded``: start the whole stack and supervise it until Ctrl-C."""

import sys

from embedded.runner import main

if __name__ == "__main__":
    sys.exit(main())
