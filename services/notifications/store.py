"""All of the notifications service's SQL; its tables arrive with its issue."""

from shared.db import new_metadata

metadata = new_metadata()
