from shared.migrations import run_env

from services.benefits.store import metadata

run_env(metadata)
