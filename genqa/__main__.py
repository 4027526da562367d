"""`python -m genqa COMMAND ...`: the same as the `genqa` command."""

import sys

from genqa.cli import main

sys.exit(main())
