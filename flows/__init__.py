"""Prefect flows, the ``selfmm`` CLI and the served deployments: thin glue over features/ and selfmm/."""
