"""`python -m services.registry`: serve the registry with uvicorn."""

from services.registry.settings import RegistrySettings
from shared.serve import serve

if __name__ == "__main__":
    serve("services.registry.app:create_app", RegistrySettings())
