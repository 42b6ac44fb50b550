from __future__ import annotations

from archselect.cli import main

main()
