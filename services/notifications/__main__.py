"""`python -m services.notifications`: serve the notifications service with uvicorn."""

from services.notifications.settings import NotificationsSettings
from shared.serve import serve

if __name__ == "__main__":
    serve("services.notifications.app:create_app", NotificationsSettings())
