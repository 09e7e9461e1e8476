from shared.migrations import run_env

from services.verification.store import metadata

run_env(metadata)
