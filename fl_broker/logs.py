"""Logging set-up for the programs (server, worker, simulate). The library itself installs no handlers."""

from __future__ import annotations

import logging
import logging.config
from pathlib import Path

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(
    log_file: Path | None, *, level: str = "INFO", config_file: Path | None = None, console: bool = True
) -> None:
    """Log to stderr and `log_file`; or, when `config_file` (a logging.config.fileConfig file such as an app's
    resources/log.config) is given, by that file, with %(logfile)s set to `log_file`."""
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
    if config_file is not None:
        defaults = {"logfile": str(log_file or "fl-broker.log").replace("\\", "/")}
        logging.config.fileConfig(config_file, defaults=defaults, disable_existing_loggers=False)
        return
    handlers: list[logging.Handler] = [logging.StreamHandler()] if console else []
    if log_file is not None:
        handlers.append(logging.FileHandler(log_file, encoding="utf-8"))
    logging.basicConfig(level=level.upper(), format=FORMAT, handlers=handlers, force=True)
    logging.getLogger("pika").setLevel(logging.ERROR)  # pika warns about every unroutable publish we already handle
