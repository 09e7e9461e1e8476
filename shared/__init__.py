"""The small common library of the Bangfu services: nothing service-specific lives here."""
