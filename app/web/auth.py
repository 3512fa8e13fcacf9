"""Who may change what. Reading stays open to everyone, so a class can compare its models.

Runs and corpora belong to the owner key that made them (app/web/security.py): only that key
or the admin (the holder of RNNSCOPE_TOKEN) may cancel, resume or delete them. Creating
(an upload, a run) is open to every owner within their quotas, unless the server is set
with RNNSCOPE_CREATE_NEEDS_TOKEN, when only the admin may.

Listings (models, runs, corpora) show yours by default and everyone's with ?owner=all, a
page at a time: owner keys are free, so one person's thousands of runs must not fill the
listing every other page loads.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from fastapi import Depends, HTTPException, Query, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from ..inference.deps import SettingsDep
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
    if requester is None:                       # app/web/security.py sets it for every request
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


@dataclass(frozen=True)
class Listing:
    """Which page of a listing to answer: `owner` None for everyone's, else that owner's."""

    owner: str | None
    limit: int
    offset: int

    def answer(self, response: Response, total: int) -> None:
        response.headers["X-Total-Count"] = str(total)


# A page of 100 summaries is ~70 KB; 500 bounds what one request can make the server list.
LIST_PAGE, LIST_PAGE_MAX = 100, 500
TOTAL_COUNT = {"X-Total-Count": {"schema": {"type": "integer"}, "description": "How many the listing holds "
                                                                              "in all, across its pages."}}


OwnerView = Annotated[Literal["me", "all"], Query(description="me: yours (and what nobody owns); all: everyone's.")]
PageSize = Annotated[int, Query(ge=1, le=LIST_PAGE_MAX, description="At most this many.")]
PageStart = Annotated[int, Query(ge=0, le=2**31, description="Skip this many first.")]


async def listing(requester: RequesterDep, owner: OwnerView = "me", limit: PageSize = LIST_PAGE,
                  offset: PageStart = 0) -> Listing:
    """On the event loop, as the model listing that uses it: nothing here waits."""
    return Listing(None if owner == "all" else requester.owner, limit, offset)


ListingDep = Annotated[Listing, Depends(listing)]
TokenChecked = Depends(check_token)
MayCreate = Depends(check_may_create)
# Added to the operation's security list, which FastAPI fills with HTTPBearer: no credentials ({})
# are fine too, as the token is only the admin's.
OPTIONAL_BEARER = {"security": [{}]}
