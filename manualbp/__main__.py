"""``python -m manualbp train`` / ``explain`` / ``bench``: the same as the ``manualbp`` command."""
import sys

from .cli import main

sys.exit(main())
