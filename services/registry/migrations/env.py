import services.registry.dci.store  # noqa: F401 - the DCI tables share the registry's metadata
from services.registry.store import metadata
from shared.migrations import run_env

run_env(metadata)
