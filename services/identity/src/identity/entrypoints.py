"""identity's HTTP API: parse, run one handler, answer.

| route | who | answer |
|---|---|---|
| POST /users ``{email, password}`` | anyone | 201 ``{id, email, roles}`` |
| POST /token ``{email, password}`` | anyone | 200 ``{access_token, token_type, expires_in}`` |
| GET /me | logged in | 200 ``{id, email, roles}`` |
| GET /users?limit=&cursor= | admin | 200 ``{items: [{id, email, roles, created_at}], ...}`` |
| GET /.well-known/jwks.json | anyone | 200 JWKS |
| POST /keys/rotate | admin | 201 ``{kid, created_at}`` |
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from agora.app import Resources
from agora.cursor import PageOut
from agora.deps import Admin, CurrentUser, Uow, provided, resources
from agora.query import CURSOR_DESCRIPTION
from identity import application
from identity.application import HashingBusy, LogIn, Register
from identity.domain import (
    MAX_PASSWORD_LENGTH,
    MIN_PASSWORD_LENGTH,
    USERS_PAGE_MAX,
    EmailTaken,
    InvalidCredentials,
    InvalidEmail,
    KeyRotationConflict,
    LoginLocked,
    UnknownUser,
    User,
    WeakPassword,
)

# Domain errors and the status each one answers with (the problem's title is the error's first
# docstring line; a 401 gets WWW-Authenticate, a LoginLocked and a HashingBusy their Retry-After
# from the chassis).
ERRORS: dict[type[Exception], int] = {
    InvalidCredentials: 401,
    LoginLocked: 429,
    HashingBusy: 429,
    InvalidEmail: 422,
    WeakPassword: 422,
    EmailTaken: 409,
    UnknownUser: 404,
    KeyRotationConflict: 409,
}


class Credentials(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    email: str = Field(max_length=320, examples=["ada@example.com"])
    password: str = Field(min_length=1, max_length=1024, examples=["correct horse battery"])


class NewAccount(Credentials):
    """Credentials for a new account. The document gives the password's length as
    ``check_password`` counts it, after NFKC normalization; that check, not the schema, refuses
    a password out of bounds, so the answer says what is wrong in its words (the storefront
    shows them). It also refuses well-known passwords and ones holding the email."""

    password: str = Field(
        min_length=1,
        max_length=1024,
        examples=["correct horse battery"],
        json_schema_extra={"minLength": MIN_PASSWORD_LENGTH, "maxLength": MAX_PASSWORD_LENGTH},
    )


class UserView(BaseModel):
    id: str
    email: str
    roles: list[str]

    @classmethod
    def of(cls, user: User) -> UserView:
        return cls(id=user.id, email=user.email, roles=list(user.roles))


class AccountView(UserView):
    created_at: datetime

    @classmethod
    def of(cls, user: User) -> AccountView:
        return cls(id=user.id, email=user.email, roles=list(user.roles), created_at=user.created_at)


class AccountPage(PageOut[AccountView]):
    pass


class TokenView(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"  # noqa: S105 (the OAuth token type, not a secret)
    expires_in: int = Field(description="seconds until the token expires")


class KeySet(BaseModel):
    keys: list[dict[str, Any]]


class KeyView(BaseModel):
    kid: str
    created_at: datetime


Parts = Annotated[application.Parts, Depends(provided(application.Parts))]


async def client_address(request: Request, found: Annotated[Resources, Depends(resources)]) -> str:
    # The gateway forwards the client's address; a direct caller's is its peer (agora.forwarded).
    return found.settings.proxies.client(request.scope).address


ClientAddress = Annotated[str, Depends(client_address)]

PROBLEM: dict[str, Any] = {"content": {"application/problem+json": {}}}
router = APIRouter()


@router.post(
    "/users",
    status_code=201,
    summary="Register a customer account",
    responses={409: PROBLEM, 422: PROBLEM, 429: PROBLEM},
)
async def register(body: NewAccount, uow: Uow, parts: Parts) -> UserView:
    user = await application.register(uow, parts, Register(body.email, body.password))
    return UserView.of(user)


@router.post(
    "/token",
    summary="Log in: exchange email and password for an access token",
    responses={401: PROBLEM, 429: PROBLEM},
)
async def token(
    body: Credentials, uow: Uow, parts: Parts, client: ClientAddress, response: Response
) -> TokenView:
    issued = await application.log_in(uow, parts, LogIn(body.email, body.password, client))
    # A token is a credential: no cache may keep it (RFC 6749 5.1).
    response.headers["Cache-Control"] = "no-store"
    return TokenView(access_token=issued.access_token, expires_in=issued.expires_in)


@router.get("/me", summary="The account the access token belongs to", responses={401: PROBLEM})
async def me(user: CurrentUser, uow: Uow, parts: Parts) -> UserView:
    return UserView.of(await uow.query(application.find_user, parts.users, user.id))


@router.get(
    "/users",
    summary="Every account, ordered by id (for operators and the consistency checker)",
    responses={400: PROBLEM, 401: PROBLEM, 403: PROBLEM},
)
async def list_users(
    _admin: Admin,
    uow: Uow,
    parts: Parts,
    limit: Annotated[int, Query(ge=1, le=USERS_PAGE_MAX)] = 100,
    cursor: Annotated[
        str | None,
        Query(max_length=64, description=CURSOR_DESCRIPTION),
    ] = None,
) -> AccountPage:
    after = application.USER_CURSORS.decode(cursor) if cursor else None
    page = await uow.query(application.list_users, parts.users, after, limit)
    return AccountPage.of(page, AccountView.of)


@router.get("/.well-known/jwks.json", summary="The public keys that verify access tokens")
async def jwks(uow: Uow, parts: Parts) -> KeySet:
    document = await uow.query(application.key_set, parts.signing_keys, parts.clock())
    return KeySet.model_validate(document)


@router.post(
    "/keys/rotate",
    status_code=201,
    summary="Make a new signing key; the previous ones verify until their tokens expire",
    responses={401: PROBLEM, 403: PROBLEM, 409: PROBLEM},
)
async def rotate_keys(_admin: Admin, uow: Uow, parts: Parts) -> KeyView:
    key = await uow.run(
        application.rotate_signing_key,
        parts.signing_keys,
        parts.key_maker,
        parts.clock(),
        parts.tokens,
    )
    return KeyView(kid=key.kid, created_at=key.created_at)
