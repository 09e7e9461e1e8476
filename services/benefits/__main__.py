"""`python -m services.benefits`: serve the benefits service with uvicorn."""

from services.benefits.settings import BenefitsSettings
from shared.serve import serve

if __name__ == "__main__":
    serve("services.benefits.app:create_app", BenefitsSettings())
