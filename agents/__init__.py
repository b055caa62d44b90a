"""Agent files (see ``example.yaml``). The FAQ agent speaks for the example clinic when
``AGENT_FILE`` is unset, so a keyless server answers something real out of the box."""

from pathlib import Path

EXAMPLE = Path(__file__).with_name("example.yaml")
