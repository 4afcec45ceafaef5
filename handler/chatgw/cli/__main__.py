"""`python -m chatgw.cli`: the `chatgw` command."""

import sys

from chatgw.cli.main import main

sys.exit(main())
