"""Server-rendered pages: sign-in, city overview, segment, district, enterprise and device pages.

Pages carry no data: each one's script fetches it from /api with the sign-in cookie, so a page
enforces exactly what its endpoints enforce. The page handlers still check access first, so a
forbidden page answers 403/404 (or sends an anonymous visitor to /login) instead of a blank shell.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Final

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from monitoring.api import registry
from monitoring.api.access import Capability
from monitoring.api.deps import Caller, Conn, get_caller, presented_credential
from monitoring.api.errors import ApiError, UnauthorizedError
from monitoring.api.routes.auth import home_of
from monitoring.api.scopes import Scope, require_scope
from monitoring.auth import Role

WEB_DIR: Final = Path(__file__).resolve().parents[2] / "web"
LANGS: Final = ("zh-CN", "en")
LANG_COOKIE: Final = "shulian_lang"

templates = Jinja2Templates(directory=WEB_DIR / "templates")
router = APIRouter(include_in_schema=False)


@functools.cache
def translations(lang: str) -> dict[str, str]:
    data: dict[str, str] = json.loads((WEB_DIR / "i18n" / f"{lang}.json").read_text("utf-8"))
    return data


def language(request: Request) -> str:
    """The UI language: the switch's cookie, else Simplified Chinese."""
    chosen = request.cookies.get(LANG_COOKIE, "")
    return chosen if chosen in LANGS else "zh-CN"


def local_name(request: Request, row: dict[str, Any], field: str = "name") -> str:
    """A registry name in the page's language: the English one on English pages when there is
    one, else the Chinese one (and the other way round)."""
    zh, en = row.get(field) or "", row.get(f"{field}_en") or ""
    return str((en or zh) if language(request) == "en" else (zh or en))


def render(
    request: Request,
    template: str,
    page: str,
    caller: Caller | None,
    status: int = 200,
    **extra: Any,
) -> HTMLResponse:
    lang = language(request)
    strings = translations(lang)
    context = {
        "lang": lang,
        "page": page,
        "caller": caller,
        "t": lambda key: strings.get(key, key),
        # Machine kinds come from profiles: an unknown one shows as it is.
        "kind": lambda name: strings.get(f"kind.{name}", name) if name else "–",
        # </ cannot end the script element it is embedded in
        "i18n_json": json.dumps(strings, ensure_ascii=False).replace("</", "<\\/"),
        **extra,
    }
    return templates.TemplateResponse(request, template, context, status_code=status)


async def _caller_or_none(request: Request, conn: Conn) -> Caller | None:
    if presented_credential(request) is None:
        return None
    try:
        return await get_caller(request, conn)
    except UnauthorizedError:
        return None


def page_message(strings: dict[str, str], exc: ApiError) -> str:
    """The error's text in the page's language, chosen by the error's reason, else its code.

    The server's own message is English (for API clients and logs); a page never shows it.
    """
    keys = [f"error.message.{exc.reason}"] if exc.reason else []
    keys += [f"error.message.{exc.code}", f"error.message.{_STATUS_CODES.get(exc.status, '')}"]
    text = next((strings[key] for key in keys if key in strings), strings["error.message.other"])
    params = dict(exc.params)
    if "kind" in params:  # an English noun in the message; the page names it in its language
        params["kind"] = strings.get(f"page.{params['kind']}", params["kind"])
    return text.format_map(_Blank(params))


class _Blank(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return ""


_STATUS_CODES: Final = {403: "forbidden", 404: "not_found"}


def _error_page(request: Request, caller: Caller | None, exc: ApiError) -> Response:
    strings = translations(language(request))
    heading = strings["error.forbidden"] if exc.status == 403 else strings["error.not_found"]
    return render(
        request,
        "error.html",
        "error",
        caller,
        status=exc.status,
        code=exc.status,  # `status` is the response's; the template shows the number too
        heading=heading,
        message=page_message(strings, exc),
    )


@router.get("/login", response_class=HTMLResponse)
async def login(request: Request) -> HTMLResponse:
    return render(request, "login.html", "login", None)


async def _page(
    request: Request, conn: Conn, build: Callable[[Caller], Awaitable[Response]]
) -> Response:
    caller = await _caller_or_none(request, conn)
    if caller is None:
        return RedirectResponse("/login", status_code=303)
    try:
        return await build(caller)
    except ApiError as exc:
        return _error_page(request, caller, exc)


@router.get("/", response_class=HTMLResponse)
async def overview_page(request: Request, conn: Conn) -> Response:
    async def build(caller: Caller) -> Response:
        if caller.role not in (Role.BUREAU, Role.ADMIN):
            return RedirectResponse(home_of(caller.principal), status_code=303)
        return render(request, "overview.html", "overview", caller, scope="city")

    return await _page(request, conn, build)


@router.get("/segments/{code}", response_class=HTMLResponse)
async def segment_page(code: str, request: Request, conn: Conn) -> Response:
    async def build(caller: Caller) -> Response:
        caller.require(Capability.CITY_KPIS)
        row = await registry.segment(conn, code)
        if row is None:
            raise _not_found("segment", code)
        title = f"{row['code']} {local_name(request, row)}"
        return render(
            request,
            "scope.html",
            "segment",
            caller,
            scope=f"segment:{code}",
            kind="segment",
            title=title,
        )

    return await _page(request, conn, build)


@router.get("/districts/{code}", response_class=HTMLResponse)
async def district_page(code: str, request: Request, conn: Conn) -> Response:
    async def build(caller: Caller) -> Response:
        caller.require(Capability.CITY_KPIS)
        row = await registry.district(conn, code)
        if row is None:
            raise _not_found("district", code)
        title = local_name(request, row)
        return render(
            request,
            "scope.html",
            "district",
            caller,
            scope=f"district:{code}",
            kind="district",
            title=title,
        )

    return await _page(request, conn, build)


@router.get("/enterprises/{enterprise_id}", response_class=HTMLResponse)
async def enterprise_page(enterprise_id: str, request: Request, conn: Conn) -> Response:
    async def build(caller: Caller) -> Response:
        caller.require(Capability.ENTERPRISE_SUMMARY, enterprise_id)
        row = await registry.enterprise(conn, enterprise_id)
        if row is None:
            raise _not_found("enterprise", enterprise_id)
        return render(
            request,
            "scope.html",
            "enterprise",
            caller,
            scope=f"enterprise:{enterprise_id}",
            kind="enterprise",
            title=local_name(request, row),
            flags=row["flags"],
            show_devices=caller.can(Capability.DEVICE_DATA, enterprise_id),
            show_grant=caller.can(Capability.GRANT, enterprise_id),
            granted=await registry.is_granted(conn, enterprise_id),
        )

    return await _page(request, conn, build)


@router.get("/enterprises/{enterprise_id}/devices/{device_id}", response_class=HTMLResponse)
async def device_page(enterprise_id: str, device_id: str, request: Request, conn: Conn) -> Response:
    async def build(caller: Caller) -> Response:
        row = await registry.device(conn, enterprise_id, device_id)
        caller.require_device(
            Capability.DEVICE_DATA, f"{enterprise_id}/{device_id}", enterprise_id if row else None
        )
        assert row is not None
        return render(
            request,
            "device.html",
            "device",
            caller,
            scope=f"device:{enterprise_id}/{device_id}",
            device=row,
            enterprise_name=local_name(request, row, "enterprise_name"),
            title=row["name"] or device_id,
        )

    return await _page(request, conn, build)


@router.get("/provider", response_class=HTMLResponse)
async def own_provider_page(request: Request, conn: Conn) -> Response:
    """Where a provider lands after sign-in; other roles go to their own home."""

    async def build(caller: Caller) -> Response:
        if caller.role is not Role.PROVIDER or not caller.principal.provider:
            return RedirectResponse(home_of(caller.principal), status_code=303)
        return await _provider(request, conn, caller, caller.principal.provider)

    return await _page(request, conn, build)


@router.get("/providers/{provider_id}", response_class=HTMLResponse)
async def provider_page(provider_id: str, request: Request, conn: Conn) -> Response:
    async def build(caller: Caller) -> Response:
        return await _provider(request, conn, caller, provider_id)

    return await _page(request, conn, build)


async def _provider(request: Request, conn: Conn, caller: Caller, provider_id: str) -> Response:
    row = await require_scope(conn, caller, Scope("provider", provider_id))
    return render(
        request,
        "provider.html",
        "provider",
        caller,
        scope=f"provider:{provider_id}",
        title=row["name"],
    )


@router.get("/fleet", response_class=HTMLResponse)
async def own_fleet_page(request: Request, conn: Conn) -> Response:
    """The fleet console of the signed-in provider; admin sees every gateway."""

    async def build(caller: Caller) -> Response:
        if caller.role is Role.ADMIN:
            return _fleet(request, caller, "all")
        if caller.role is Role.PROVIDER and caller.principal.provider:
            return _fleet(request, caller, caller.principal.provider)
        return RedirectResponse(home_of(caller.principal), status_code=303)

    return await _page(request, conn, build)


@router.get("/fleet/{key}", response_class=HTMLResponse)
async def fleet_page(key: str, request: Request, conn: Conn) -> Response:
    async def build(caller: Caller) -> Response:
        await require_scope(conn, caller, Scope("fleet", key))
        return _fleet(request, caller, key)

    return await _page(request, conn, build)


def _fleet(request: Request, caller: Caller, key: str) -> Response:
    return render(request, "fleet.html", "fleet", caller, scope=f"fleet:{key}")


def _not_found(kind: str, key: str) -> ApiError:
    from monitoring.api.errors import NotFoundError

    return NotFoundError(f"{kind} {key!r} not found", params={"kind": kind, "key": key})
