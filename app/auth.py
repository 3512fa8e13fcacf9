"""Who may change what. Reading stays open to everyone, so a class can compare its models.

Runs and corpora belong to the owner key that made them (app/security.py): only that key
or the admin (the holder of RNNSCOPE_TOKEN) may cancel, resume or delete them. Creating
(an upload, a run) is open to every owner within their quotas, unless the server is set
with RNNSCOPE_CREATE_NEEDS_TOKEN, when only the admin may.
"""
from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from .deps import SettingsDep
from .schemas import ErrorMessage
from .security import Requester

# auto_error off: without a token configured, a request without the header is fine.
bearer = HTTPBearer(auto_error=False, description="The server's RNNSCOPE_TOKEN, the admin's: it may change "
                                                  "what others own.")

UNAUTHORIZED = {401: {"model": ErrorMessage, "description": "A token was sent and it is not the server's, "
                                                            "or the server lets only its admin create."}}
FORBIDDEN = {403: {"model": ErrorMessage, "description": "Someone else owns it, or the request came from "
                                                         "another site's page."}}


async def get_requester(request: Request) -> Requester:
    requester = request.scope.get("state", {}).get("requester")
    if requester is None:                       # app/security.py sets it for every request
        raise HTTPException(500, "the request passed no owner check")
    return requester


RequesterDep = Annotated[Requester, Depends(get_requester)]


async def check_token(requester: RequesterDep,
                      credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> None:
    """Refuse (401) a request that sends a token which is not the server's: a mistyped
    admin token must not quietly act as an ordinary owner."""
    if credentials is not None and not requester.admin:
        raise HTTPException(401, "the token sent is not this server's (RNNSCOPE_TOKEN); send the right one "
                                 "or none", headers={"WWW-Authenticate": "Bearer"})


async def check_may_create(settings: SettingsDep, requester: RequesterDep) -> None:
    if settings.create_needs_token and not requester.admin:
        raise HTTPException(401, "this server lets only its admin upload and train; send "
                                 "`Authorization: Bearer <token>` (the server's RNNSCOPE_TOKEN)",
                            headers={"WWW-Authenticate": "Bearer"})


def check_owner(requester: Requester, owner: str | None, what: str, action: str) -> None:
    """Refuse (403) to `action` `what` unless the requester owns it or is the admin."""
    if not requester.may_change(owner):
        raise HTTPException(403, f"{what} belongs to someone else: only the browser (or X-Rnnscope-Owner key) "
                                 f"that made it, or the admin (RNNSCOPE_TOKEN), may {action} it")


TokenChecked = Depends(check_token)
MayCreate = Depends(check_may_create)
# Added to the operation's security list, which FastAPI fills with HTTPBearer: no credentials ({})
# are fine too, as the token is only the admin's.
OPTIONAL_BEARER = {"security": [{}]}
