"""The optional access token: when RNNSCOPE_TOKEN is set, every request that changes state
(upload, start, cancel, resume, delete) must carry `Authorization: Bearer <token>`.
Reading stays open."""
from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, HTTPException
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from .schemas import ErrorMessage
from .deps import SettingsDep

# auto_error off: without a token configured, a request without the header is fine.
bearer = HTTPBearer(auto_error=False, description="The server's RNNSCOPE_TOKEN; needed only when it is set.")

UNAUTHORIZED = {401: {"model": ErrorMessage, "description": "The server has a token and the request did not "
                                                            "carry it as `Authorization: Bearer <token>`."}}


async def require_token(settings: SettingsDep,
                        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> None:
    """Refuse (401) a state-changing request without the configured token."""
    if settings.token is None:
        return
    expected = settings.token.get_secret_value().encode()
    given = b"" if credentials is None else credentials.credentials.encode()
    # compare_digest: the time taken must not reveal how much of a guess was right.
    if not hmac.compare_digest(given, expected):
        what = "no token" if credentials is None else "a wrong token"
        raise HTTPException(401, f"this server needs a token for changes and the request carried {what}; "
                                 "send `Authorization: Bearer <token>` (the server's RNNSCOPE_TOKEN)",
                            headers={"WWW-Authenticate": "Bearer"})


TokenRequired = Depends(require_token)
# Added to the operation's security list, which FastAPI fills with HTTPBearer: no credentials ({})
# are fine too, as the token is needed only when the server has one.
OPTIONAL_BEARER = {"security": [{}]}
