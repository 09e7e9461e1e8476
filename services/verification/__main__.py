"""`python -m services.verification`: serve the verification service with uvicorn."""

from services.verification.settings import VerificationSettings
from shared.serve import serve

if __name__ == "__main__":
    serve("services.verification.app:create_app", VerificationSettings())
