"""``python -m kpi ...``: the ``voice-agent kpi`` commands without the main CLI."""

from kpi.cli import main

raise SystemExit(main())
