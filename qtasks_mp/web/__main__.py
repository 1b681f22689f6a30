"""`python -m qtasks_mp.web --store tasks.db`: the same as `qtasks-mp web`."""

import sys

from . import main_web

sys.exit(main_web(sys.argv[1:]))
