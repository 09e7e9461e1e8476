"""台账导入: a county's Excel ledger uploaded to the registry, and its row-by-row report."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from services.console.registry import XLSX, ApiError
from services.console.sessions import Session
from services.console.web import NotSignedIn, access_token, checked_form, console, render, signed_in

router = APIRouter()

# The registry refuses a larger ledger (413): the console does not send one.
LEDGER_MAX_BYTES = 5 * 1024 * 1024


def _writer(request: Request) -> Session:
    session = signed_in(request)
    assert session.person is not None
    if "registry:write" not in session.person.scopes:
        raise StarletteHTTPException(403)
    return session


@router.get("/imports/ledger")
async def ledger_form(request: Request) -> Response:
    return render(request, "import.html", _writer(request), report=None, error=None)


@router.get("/imports/ledger/template.xlsx")
async def ledger_template(request: Request) -> Response:
    """The registry's empty ledger (its columns, drop-down lists and instructions)."""
    session = _writer(request)
    content = await console(request).registry.ledger_template(await access_token(request, session))
    return Response(
        content,
        media_type=XLSX,
        headers={"Content-Disposition": 'attachment; filename="ledger-template.xlsx"'},
    )


@router.post("/imports/ledger")
async def import_ledger(request: Request) -> Response:
    session = _writer(request)
    form = await checked_form(request, session)
    upload = form.get("ledger")
    if not isinstance(upload, UploadFile) or not upload.filename:
        return _page(request, session, 422, error="请选择要导入的台账文件（.xlsx）。")
    content = await upload.read(LEDGER_MAX_BYTES + 1)
    if len(content) > LEDGER_MAX_BYTES:
        return _page(request, session, 413, error="台账文件超过 5 MB，请分成几个文件导入。")
    try:
        report = await console(request).registry.import_ledger(
            await access_token(request, session), upload.filename, content
        )
    except ApiError as error:
        if error.status == 401:
            raise NotSignedIn() from error
        status = error.status if 400 <= error.status < 500 else 502
        return _page(request, session, status, error=error.said.text)
    return render(request, "import.html", session, report=report, error=None)


def _page(request: Request, session: Session, status: int, *, error: str) -> Response:
    return render(request, "import.html", session, status_code=status, report=None, error=error)
