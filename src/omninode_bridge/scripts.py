"""Console-script entry points. Each CLI lives behind an extra; without it, say which
one to install instead of showing an ImportError traceback."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any


def _run(module: str, extra: str, script: str) -> Any:
    try:
        main: Callable[[], Any] = importlib.import_module(module).main
    except ModuleNotFoundError as err:
        if err.name and err.name.split(".")[0] == "omninode_bridge":
            raise
        sys.stderr.write(
            f"{script}: error: it needs the [{extra}] extra ({err.name} is not installed): "
            f"pip install 'omninode-bridge[{extra}]'\n"
        )
        sys.exit(2)
    return main()


def omninode_lock() -> Any:
    # the engine's commands, then relay / events --follow, then serve / run
    return _run("omninode_bridge.service.commands", "service", "omninode-lock")


def omninode_generate() -> Any:
    return _run("omninode_bridge.codegen.cli", "codegen", "omninode-generate")


def omninode_check() -> Any:
    return _run("omninode_bridge.codegen.check", "codegen", "omninode-check")
