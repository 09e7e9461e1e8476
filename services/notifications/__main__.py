"""`python -m services.notifications`: serve the notifications service with uvicorn."""

from shared.serve import serve

from services.notifications.settings import NotificationsSettings

if __name__ == "__main__":
    serve("services.notifications.app:create_app", NotificationsSettings())
