"""`python -m bot` is `dungeon-master`."""

import sys

from bot.cli import main

sys.exit(main())
