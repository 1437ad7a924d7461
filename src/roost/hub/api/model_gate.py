"""Model versions: validation reports (admin), benchmarks (devices record, admins read), recommendation."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Request
from starlette.concurrency import run_in_threadpool

from roost.hub.api import auth
from roost.hub.api.admin import StoreDep
from roost.hub.api.errors import COMMON_ERRORS
from roost.hub.contract import BenchmarkIn, BenchmarkRecord, ErrorBody, ModelValidation, Recommendation

router = APIRouter(prefix="/v1", dependencies=[Depends(auth.admin)], responses=COMMON_ERRORS)
device_router = APIRouter(prefix="/v1", responses=COMMON_ERRORS)


@router.put("/components/{name}/{version}/validation", tags=["models"], response_model=ModelValidation,
            responses={404: {"model": ErrorBody, "description": "COMPONENT_NOT_FOUND"},
                       422: {"model": ErrorBody, "description": "VALIDATION_REPORT_INCONSISTENT"}})
async def put_validation(name: str, version: str, body: ModelValidation, s: StoreDep) -> ModelValidation:
    """Attach (or replace) a model version's validation report; its numbers must agree with each other."""
    return await run_in_threadpool(s.set_validation, name, version, body)


@router.get("/components/{name}/{version}/validation", tags=["models"], response_model=ModelValidation,
            responses={404: {"model": ErrorBody, "description": "VALIDATION_REPORT_MISSING"}})
async def get_validation(name: str, version: str, s: StoreDep) -> ModelValidation:
    return await run_in_threadpool(s.get_validation, name, version)


@device_router.post("/device/benchmarks", tags=["device", "models"], response_model=list[BenchmarkRecord],
                    responses={422: {"model": ErrorBody, "description": "BENCHMARK_RECORD_INVALID"}})
async def record_benchmarks(body: BenchmarkIn, request: Request) -> list[BenchmarkRecord]:
    """What the benchmark component measured on this device, filed under the device's class."""
    me = auth.device(request)
    records: list[BenchmarkRecord] = await run_in_threadpool(request.app.state.store.record_benchmarks, me.id, body)
    return records


@router.get("/models/benchmarks", tags=["models"], response_model=list[BenchmarkRecord])
async def list_benchmarks(s: StoreDep, device_class: str | None = Query(None, max_length=255)) -> list[BenchmarkRecord]:
    return await run_in_threadpool(s.list_benchmarks, device_class)


@router.get("/models/recommend", tags=["models"], response_model=Recommendation,
            responses={404: {"model": ErrorBody, "description": "DEVICE_NOT_FOUND, BENCHMARK_MISSING"},
                       409: {"model": ErrorBody, "description": "NO_CANDIDATE_FITS"}})
async def recommend(s: StoreDep, device: str = Query(..., min_length=1, max_length=128),
                    max_latency_ms: float | None = Query(None), min_metric: float | None = Query(None),
                    component: list[str] = Query(default_factory=list, max_length=100)) -> Recommendation:
    """The candidate variant that fits the device best, and why each candidate was or was not chosen."""
    return await run_in_threadpool(lambda: s.recommend(device, max_latency_ms=max_latency_ms, min_metric=min_metric,
                                                       components=component))
