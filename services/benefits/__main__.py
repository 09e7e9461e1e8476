"""`python -m services.benefits`: serve the benefits service with uvicorn."""

from shared.serve import serve

from services.benefits.settings import BenefitsSettings

if __name__ == "__main__":
    serve("services.benefits.app:create_app", BenefitsSettings())
