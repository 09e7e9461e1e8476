"""The verification service's HTTP routes and its error table."""

from fastapi import APIRouter

from shared.problems import ErrorTable

router = APIRouter(prefix="/v1", tags=["verification"])
ERRORS: ErrorTable = {}
