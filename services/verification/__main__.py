"""`python -m services.verification`: serve the verification service with uvicorn."""

from shared.serve import serve

from services.verification.settings import VerificationSettings

if __name__ == "__main__":
    serve("services.verification.app:create_app", VerificationSettings())
