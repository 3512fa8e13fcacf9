"""Liveness for load balancers and the Docker health check."""
from __future__ import annotations

from fastapi import APIRouter, Request

from ..inference.deps import RegistryDep
from .schemas import Health

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
async def healthz(request: Request, registry: RegistryDep) -> Health:
    """Answers on the event loop, so it stays quick while NumPy work fills the threads."""
    warmer = getattr(request.app.state, "warmer", None)
    return Health(status="ok", models=len(registry), warming=warmer is not None and not warmer.idle.is_set())
