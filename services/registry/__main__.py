"""`python -m services.registry`: serve the registry with uvicorn."""

from shared.serve import serve

from services.registry.settings import RegistrySettings

if __name__ == "__main__":
    serve("services.registry.app:create_app", RegistrySettings())
