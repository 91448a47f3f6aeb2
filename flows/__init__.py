"""Prefect flows, the ``selfmm`` CLI and the served deployments: thin glue over features/ and selfmm/."""

import logging

# Prefect forwards these libraries' loggers to the flow-run logs (PREFECT_LOGGING_EXTRA_LOGGERS) but leaves their
# level at the root's WARNING, which drops their INFO lines (one per training epoch) in the CLI and the UI alike.
for _name in ("selfmm", "features"):
    logging.getLogger(_name).setLevel(logging.INFO)
