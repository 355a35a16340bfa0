"""The user's account: logging in, registering, logging out, and the messages the shop sent."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.responses import RedirectResponse, Response

from agora.client import Reply
from gateway.storefront.client import (
    MESSAGES,
    SIGN_IN,
    Anonymous,
    Services,
    problem,
    problem_type,
    read,
)
from gateway.storefront.common import (
    CSRF,
    Anyone,
    Listing,
    Text,
    User,
    private,
)
from gateway.storefront.forms import Form as FormState
from gateway.storefront.forms import fields_or_general, sentence
from gateway.storefront.models import Message, Page, Token
from gateway.web import Unavailable, end_session, page_router, render, safe_next, set_session


@dataclass(frozen=True, slots=True)
class Credentials:
    """The login or register form as sent: the form to show again (with a message beside each
    field left empty), and the credentials for identity."""

    form: FormState
    credentials: dict[str, str]


async def _credentials(email: Text = "", password: Text = "", next: Text = "/") -> Credentials:
    form = FormState(values={"email": email.strip(), "next": safe_next(next)})
    if not email.strip():
        form.error("email", "Fill this in.")
    if not password:
        form.error("password", "Fill this in.")
    return Credentials(form, {"email": email.strip(), "password": password})


Sent = Annotated[Credentials, Depends(_credentials)]


_MESSAGES = Listing(Page[Message], "notifications", "/notifications", MESSAGES, "messages")

router = page_router()


@router.get("/login")
async def login_form(
    request: Request, user: Anyone, next: str = "/", expired: str = ""
) -> Response:
    form = FormState(values={"next": safe_next(next)})
    if expired:
        form.general.append("Your session expired; log in again to continue.")
    return render(request, "storefront/login.html", {"form": form}, headers=private())


@router.post("/login", dependencies=CSRF)
async def login(request: Request, services: Anonymous, sent: Sent) -> Response:
    form = sent.form
    if form.ok:
        reply = await services.call(
            "identity", "POST", "/token", what=SIGN_IN, json=sent.credentials
        )
        if reply.status == 200:
            return await _signed_in(request, read(Token, reply, SIGN_IN), form.values["next"])
        _login_refusal(reply, form)
    return render(request, "storefront/login.html", {"form": form}, status=_status(form))


@router.get("/register")
async def register_form(request: Request, user: Anyone, next: str = "/") -> Response:
    form = FormState(values={"next": safe_next(next)})
    return render(request, "storefront/register.html", {"form": form}, headers=private())


@router.post("/register", dependencies=CSRF)
async def register(request: Request, services: Anonymous, sent: Sent) -> Response:
    form = sent.form
    if form.ok:
        credentials = sent.credentials
        reply = await services.call("identity", "POST", "/users", what=SIGN_IN, json=credentials)
        if reply.status == 201:
            token = await services.sign_in(credentials)
            return await _signed_in(request, token, form.values["next"])
        _register_refusal(reply, form)
    return render(request, "storefront/register.html", {"form": form}, status=_status(form))


@router.post("/logout", dependencies=CSRF)
async def logout(request: Request) -> Response:
    response = RedirectResponse("/", 303)
    await end_session(response, request)
    return response


@router.get("/messages")
async def messages(request: Request, user: User, services: Services, cursor: str = "") -> Response:
    return await _MESSAGES.page_at(request, services, cursor)


def _status(form: FormState) -> int:
    return 200 if form.ok else 422


async def _signed_in(request: Request, token: Token, next_path: str) -> Response:
    response = RedirectResponse(safe_next(next_path), 303)
    await set_session(response, request, token.access_token, token.expires_in)
    return response


def _login_refusal(reply: Reply, form: FormState) -> None:
    if reply.status == 401:
        form.general.append("Wrong email or password.")
    elif reply.status == 429:
        form.general.append(_too_many(reply, "Too many failed attempts"))
    elif reply.status == 422:
        fields_or_general(problem(reply), ("email", "password"), form)
    else:
        raise Unavailable(SIGN_IN)


def _too_many(reply: Reply, what: str) -> str:
    """A 429's sentence: identity refuses when its password checks are all taken, too, and
    then nothing the shopper did is to blame."""
    wait = reply.headers.get("Retry-After", "")
    later = f" in {wait} second{'' if wait == '1' else 's'}" if wait.isdigit() else " later"
    if problem_type(reply) == "hashing-busy":
        return f"The shop is busy checking passwords; try again{later}."
    return f"{what}; try again{later}."


def _register_refusal(reply: Reply, form: FormState) -> None:
    kind = problem_type(reply)
    detail = str(problem(reply).get("detail") or "")
    if reply.status == 409:
        form.error("email", "This email already has an account; log in instead.")
    elif kind == "invalid-email":
        form.error("email", sentence(detail or "This is not an email address."))
    elif kind == "weak-password":
        form.error("password", sentence(detail or "Choose a longer password."))
    elif reply.status == 422:
        fields_or_general(problem(reply), ("email", "password"), form)
    elif reply.status == 429:
        form.general.append(_too_many(reply, "Too many attempts"))
    else:
        raise Unavailable(SIGN_IN)
