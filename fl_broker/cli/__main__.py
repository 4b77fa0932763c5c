"""`python -m fl_broker.cli` is the `fl-broker` command."""

import sys

from fl_broker.cli import main

sys.exit(main())
