"""Federated learning jobs (admin): create one against a group, list them, read one."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Path, Request
from starlette.concurrency import run_in_threadpool

from roost.hub.api import auth
from roost.hub.api.admin import StoreDep
from roost.hub.api.errors import COMMON_ERRORS
from roost.hub.contract import ErrorBody, LearnJob, LearnJobIn
from roost.hub.learn_publish import check_serving_component

router = APIRouter(prefix="/v1/learn", dependencies=[Depends(auth.admin)], responses=COMMON_ERRORS)


@router.post("/jobs", tags=["learn"], response_model=LearnJob, status_code=201,
             responses={400: {"model": ErrorBody, "description": "LEARN_TASK_UNKNOWN, LEARN_STRATEGY_UNKNOWN, "
                                                                 "LEARN_ROUNDS_OUT_OF_RANGE, LEARN_TARGET_EMPTY, "
                                                                 "LEARN_PARTICIPANTS_INVALID, "
                                                                 "LEARN_COMPONENT_UNKNOWN, "
                                                                 "LEARN_COMPONENT_NOT_SERVING"},
                        404: {"model": ErrorBody, "description": "GROUP_NOT_FOUND"}})
async def create_job(body: LearnJobIn, s: StoreDep, request: Request) -> LearnJob:
    """Record a job PENDING against ``group:NAME`` with its checked spec and the group's devices, and
    hand it to the hub's runner (:mod:`roost.hub.learn_runner`). The component its model will be published
    to is checked first (:func:`roost.hub.learn_publish.check_serving_component`)."""
    await run_in_threadpool(check_serving_component, s, body.component)
    job: LearnJob = await run_in_threadpool(s.create_learn_job, body)
    await run_in_threadpool(request.app.state.learn_runner.submit, job.job)
    return job


@router.get("/jobs", tags=["learn"], response_model=list[LearnJob])
async def list_jobs(s: StoreDep) -> list[LearnJob]:
    jobs: list[LearnJob] = await run_in_threadpool(s.learn_jobs)
    return jobs


@router.get("/jobs/{job}", tags=["learn"], response_model=LearnJob,
            responses={404: {"model": ErrorBody, "description": "LEARN_JOB_NOT_FOUND"}})
async def get_job(s: StoreDep, job: str = Path(..., min_length=1, max_length=64)) -> LearnJob:
    found: LearnJob = await run_in_threadpool(s.learn_job, job)
    return found
