"""``python -m manualbp train`` / ``python -m manualbp explain``: the same as the ``manualbp`` command."""
import sys

from .cli import main

sys.exit(main())
