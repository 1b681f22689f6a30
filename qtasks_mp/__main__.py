"""`python -m qtasks_mp`: the `qtasks-mp` command line (see `qtasks_mp.cli`)."""

from .cli import main

raise SystemExit(main())
