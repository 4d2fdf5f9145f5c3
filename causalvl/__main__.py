"""``python -m causalvl`` is the ``causalvl`` command."""

from .cli import main

raise SystemExit(main())
