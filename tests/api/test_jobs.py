"""/api/{tenantId}/{projectId}/execution (spec 5) on both databases: every endpoint's shape and figures on
a run with known stages, logs, samples and history; filters and limits; 404 across tenants and for
malformed GUIDs, revealing nothing."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from helpers import claim_one, create_task, error, finish, get_run, register, trigger
from sqlalchemy import insert

from conftest import FakeClock, app_with, server_settings
from taskyard.services.core import Core
from taskyard.services.tracking import TrackingEvent
from taskyard.storage.tables import run_samples

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


def z(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


@dataclass
class World:
    client: httpx.AsyncClient
    core: Core
    clock: FakeClock
    base: str  # /api/{tenant}/{project}/execution of the default project
    job: str  # the main run's uuid
    run_id: int
    worker: str
    queued: list[str]  # uuids of two queued runs: high priority first
    earlier: list[str]  # uuids of two completed earlier runs of the main task (100 s and 1000 s)

    async def get(self, path: str, **params: Any) -> httpx.Response:
        return await self.client.get(self.base + path, params=params)

    async def ok(self, path: str, **params: Any) -> Any:
        response = await self.get(path, **params)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("application/json")
        return response.json()


async def default_namespace(client: httpx.AsyncClient) -> tuple[str, str]:
    tenant = next(t for t in (await client.get("/api/tenants")).json()["data"]["items"] if t["name"] == "default")
    [project] = (await client.get(f"/api/tenants/{tenant['id']}/projects")).json()["data"]["items"]
    return tenant["id"], project["id"]


async def track(core: Core, run_id: int, name: str, data: Any, seconds: float) -> None:
    await core.tracking.record([TrackingEvent(str(run_id), "etl", name, data, at(seconds))])


async def sample(core: Core, run_id: int, name: str, value: float, seconds: float, source: str = "worker") -> None:
    async with core.db.write() as conn:
        await conn.execute(insert(run_samples).values(run_id=run_id, name=name, value=value, unit=None,
                                                      source=source, timestamp=at(seconds)))


@contextlib.asynccontextmanager
async def world(database_url: str) -> AsyncIterator[World]:
    clock = FakeClock(T0 - timedelta(hours=1))
    app = app_with(server_settings(database_url), clock=clock)
    async with app as client:
        core: Core = app.app.state.core
        tenant, project = await default_namespace(client)
        worker = (await register(client, "node-1", task_types=["shell"], max_concurrent_tasks=4,
                                 metadata={"cpu_count": 4}))["id"]
        task = await create_task(client, "etl")
        earlier = []
        for seconds in (100, 1000):
            await trigger(client, task["id"])
            claimed = await claim_one(client, worker)
            clock.advance(seconds)
            earlier.append((await finish(client, worker, claimed))["uuid"])
        clock.now = T0
        run_id = (await trigger(client, task["id"]))["run_id"]
        claimed = await claim_one(client, worker)
        assert claimed["run_id"] == run_id
        main = await get_run(client, run_id)
        await track(core, run_id, "log", {"level": "debug", "message": "dbg", "component": "Loader"}, 5)
        await track(core, run_id, "stage_start", {"stage": "Load", "order": 1, "totalRecords": 1000}, 10)
        await track(core, run_id, "log", {"level": "info", "message": "loading", "component": "Loader",
                                          "stage": "Load", "details": {"format": "CSV"}}, 10)
        await track(core, run_id, "log", {"level": "warn", "message": "missing timestamps",
                                          "details": {"affectedRecords": 3}}, 60)
        await track(core, run_id, "stage_end", {"stage": "Load", "order": 1, "status": "Completed",
                                                "recordsProcessed": 1000}, 70)
        await track(core, run_id, "stage_start", {"stage": "Analyse", "order": 2, "totalRecords": 2000}, 70)
        await track(core, run_id, "model_found", {"activities": 47}, 90)
        await track(core, run_id, "log", {"level": "error", "message": "memory limit", "component": "Engine",
                                          "stage": "Analyse"}, 100)
        await track(core, run_id, "stage_progress", {"stage": "Analyse", "order": 2, "recordsProcessed": 500,
                                                     "totalRecords": 2000}, 130)
        await track(core, run_id, "progress", {"percentage": 50, "message": "Analysing"}, 130)
        await track(core, run_id, "metric", {"name": "dataQualityScore", "value": 94.8}, 131)
        await sample(core, run_id, "cpu", 40, 30)
        await sample(core, run_id, "memory_mb", 1024, 30)
        await sample(core, run_id, "cpu", 60, 150)
        await sample(core, run_id, "memory_mb", 2048, 150)
        await sample(core, run_id, "disk_read_bytes", 10 * 2**20, 150)
        await sample(core, run_id, "disk_write_bytes", 5 * 2**20, 150)
        await sample(core, run_id, "connections", 8, 150)
        other = await create_task(client, "other")
        normal = (await trigger(client, other["id"]))["uuid"]
        high = (await trigger(client, other["id"], priority="high"))["uuid"]
        clock.now = at(200)
        yield World(client, core, clock, f"/api/{tenant}/{project}/execution", main["uuid"], run_id, worker,
                    [high, normal], earlier)


async def test_logs(database_url: str) -> None:
    async with world(database_url) as w:
        body = await w.ok(f"/job/{w.job}/logs")
        assert set(body) == {"jobId", "jobName", "jobStatus", "logsSummary", "logs", "executionMetrics"}
        assert (body["jobId"], body["jobName"], body["jobStatus"]) == (w.job, "etl", "Running")
        assert body["logsSummary"] == {"totalEntries": 4, "debugEntries": 1, "infoEntries": 1, "warnEntries": 1,
                                       "errorEntries": 1,
                                       "timeRange": {"startTime": z(at(5)), "endTime": z(at(100))}}
        assert [(e["level"], e["message"]) for e in body["logs"]] == [
            ("INFO", "loading"), ("WARN", "missing timestamps"), ("ERROR", "memory limit")]
        assert body["logs"][0] == {"timestamp": z(at(10)), "level": "INFO", "component": "Loader", "stage": "Load",
                                   "message": "loading", "details": {"format": "CSV"}}
        assert body["executionMetrics"] == {
            "currentStage": "Analyse", "stageProgress": 25, "overallProgress": 50,
            "processingRate": "4 records/second",  # 500 records in the 130 s since Analyse started
            "memoryUsage": "2.0 GB", "cpuUsage": 60,
            "estimatedCompletion": z(at(400)),  # 50 % after 200 s
        }

        assert len((await w.ok(f"/job/{w.job}/logs", level="DEBUG"))["logs"]) == 4
        assert [e["level"] for e in (await w.ok(f"/job/{w.job}/logs", level="WARN"))["logs"]] == ["WARN", "ERROR"]
        assert [e["level"] for e in (await w.ok(f"/job/{w.job}/logs", level="error"))["logs"]] == ["ERROR"]
        windowed = await w.ok(f"/job/{w.job}/logs", fromTime=z(at(60)), toTime=z(at(99)))
        assert [e["message"] for e in windowed["logs"]] == ["missing timestamps"]
        assert windowed["logsSummary"]["totalEntries"] == 4  # the summary counts every stored line
        assert len((await w.ok(f"/job/{w.job}/logs", limit=1))["logs"]) == 1
        assert len((await w.ok(f"/job/{w.job}/logs", limit=10000))["logs"]) == 3
        raw = await w.ok(f"/job/{w.job}/logs", format="raw")
        assert raw["logs"] == [f"{z(at(10))} INFO [Loader] loading", f"{z(at(60))} WARN [-] missing timestamps",
                               f"{z(at(100))} ERROR [Engine] memory limit"]

        error(await w.get(f"/job/{w.job}/logs", limit=10001), 422, "VALIDATION_ERROR", "limit")
        error(await w.get(f"/job/{w.job}/logs", limit=0), 422, "VALIDATION_ERROR", "limit")
        error(await w.get(f"/job/{w.job}/logs", level="VERBOSE"), 422, "VALIDATION_ERROR", "level")
        error(await w.get(f"/job/{w.job}/logs", format="xml"), 422, "VALIDATION_ERROR")
        error(await w.get(f"/job/{w.job}/logs", fromTime="yesterday"), 422, "VALIDATION_ERROR")


async def test_progress(database_url: str) -> None:
    async with world(database_url) as w:
        body = await w.ok(f"/job/{w.job}/progress")
        assert set(body) == {"jobId", "jobName", "status", "overallProgress", "stages", "currentActivity",
                             "resourceUsage", "qualityMetrics"}
        assert body["status"] == "Running"
        assert body["overallProgress"] == {
            "percentage": 50, "startTime": z(T0), "elapsedTime": "3 minutes 20 seconds",
            "estimatedRemaining": "3 minutes 20 seconds", "estimatedCompletion": z(at(400))}
        load, analyse = body["stages"]
        assert load == {"stageName": "Load", "stageOrder": 1, "status": "Completed", "progress": 100,
                        "startTime": z(at(10)), "endTime": z(at(70)), "duration": "1 minute",
                        "recordsProcessed": 1000, "totalRecords": 1000, "metrics": None, "estimatedEndTime": None}
        assert analyse["status"] == "Running" and analyse["progress"] == 25 and analyse["endTime"] is None
        assert (analyse["recordsProcessed"], analyse["totalRecords"]) == (500, 2000)
        # 25 % in 130 s: 390 s to go.
        assert analyse["estimatedEndTime"] == z(at(590)) and analyse["duration"] is None
        assert body["currentActivity"] == {"operation": "Analysing"}
        assert body["resourceUsage"] == {"memoryUsage": "2.0 GB", "cpuUsage": 60, "diskUsage": "15 MB",
                                         "networkIO": None, "processingRate": "4 records/second"}
        assert body["qualityMetrics"] == {"dataQualityScore": 94.8, "validationsPassed": None,
                                          "validationsFailed": None, "warningsGenerated": 1, "errorsEncountered": 1}

        # A queued job: nothing started, nothing estimated.
        queued = await w.ok(f"/job/{w.queued[0]}/progress")
        assert queued["status"] == "Queued" and queued["stages"] == []
        assert queued["overallProgress"] == {"percentage": None, "startTime": None, "elapsedTime": None,
                                             "estimatedRemaining": None, "estimatedCompletion": None}
        assert queued["resourceUsage"] == dict.fromkeys(queued["resourceUsage"])
        # A finished one: 100 %, its real end.
        done = await w.ok(f"/job/{w.earlier[0]}/progress")
        assert done["status"] == "Completed" and done["overallProgress"]["percentage"] == 100
        assert done["overallProgress"]["elapsedTime"] == "1 minute 40 seconds"
        assert done["overallProgress"]["estimatedRemaining"] is None


async def test_timeline(database_url: str) -> None:
    async with world(database_url) as w:
        body = await w.ok(f"/job/{w.job}/timeline")
        assert set(body) == {"jobId", "jobName", "timelineScope", "timeline", "upcomingEvents"}
        assert body["timelineScope"] == {"startTime": z(T0), "currentTime": z(at(200)), "endTime": None,
                                         "granularity": "minutes"}
        assert [(e["timestamp"], e["eventType"]) for e in body["timeline"]] == [
            (z(T0), "JobQueued"), (z(T0), "JobStarted"), (z(at(10)), "StageStarted"), (z(at(60)), "Warning"),
            (z(at(70)), "StageCompleted"), (z(at(70)), "StageStarted"), (z(at(90)), "Milestone"),
            (z(at(100)), "Error")]
        started = body["timeline"][1]
        assert started["details"]["workerNode"] == w.worker and started["details"]["attempt"] == 1
        completed = body["timeline"][4]
        assert completed["details"]["stageName"] == "Load" and completed["details"]["actualDuration"] == "1 minute"
        milestone = body["timeline"][6]
        assert (milestone["description"], milestone["details"]) == ("model_found", {"activities": 47})
        assert body["timeline"][7]["description"] == "memory limit"
        assert body["upcomingEvents"] == [
            {"estimatedTime": z(at(400)), "eventType": "JobCompletion", "description": "job expected to complete"},
            {"estimatedTime": z(at(590)), "eventType": "StageCompletion",
             "description": "stage 'Analyse' expected to complete"}]

        minutes = await w.ok(f"/job/{w.job}/timeline", includeSubEvents="true")
        progress = [e for e in minutes["timeline"] if e["eventType"] == "Progress"]
        assert [e["timestamp"] for e in progress] == [z(at(120)), z(at(120))]  # 12:02:10 truncated to the minute
        assert {e["details"].get("stageName") for e in progress} == {"Analyse", None}
        seconds = await w.ok(f"/job/{w.job}/timeline", includeSubEvents="true", granularity="seconds")
        assert {e["timestamp"] for e in seconds["timeline"] if e["eventType"] == "Progress"} == {z(at(130))}
        major = await w.ok(f"/job/{w.job}/timeline", includeSubEvents="true", granularity="major_events")
        assert [e["eventType"] for e in major["timeline"]] == [
            "JobQueued", "JobStarted", "StageStarted", "StageCompleted", "StageStarted", "Error"]
        error(await w.get(f"/job/{w.job}/timeline", granularity="hours"), 422, "VALIDATION_ERROR", "granularity")

        done = await w.ok(f"/job/{w.earlier[0]}/timeline")
        assert [e["eventType"] for e in done["timeline"]] == ["JobQueued", "JobStarted", "JobCompleted"]
        assert done["upcomingEvents"] == [] and done["timelineScope"]["endTime"] is not None


async def test_metrics(database_url: str) -> None:
    async with world(database_url) as w:
        body = await w.ok(f"/job/{w.job}/metrics")
        assert set(body) == {"jobId", "metricsCollectionTime", "currentMetrics", "performanceTrends", "benchmarks"}
        assert body["metricsCollectionTime"] == z(at(200))
        current = body["currentMetrics"]
        assert current["resourceUtilization"] == {
            "cpu": {"usage": 60, "cores": 4}, "memory": {"used": "2.0 GB", "peak": "2.0 GB"},
            "disk": {"reads": "10 MB", "writes": "5 MB"}, "network": {"connections": 8}}
        assert current["processing"] == {"recordsPerSecond": 3.8, "recordsProcessed": 500, "totalRecords": 2000,
                                         "errorRate": 0.002, "retryRate": 0.0}
        assert current["stages"] == {"completed": 1, "running": 1, "pending": 0, "averageStageTime": "1 minutes"}
        # 5-minute buckets: every sample in one, so no trend yet.
        assert body["performanceTrends"] == {"cpuTrend": None, "memoryTrend": None, "throughputTrend": None}
        # Projected 400 s against earlier runs of 100 s and 1000 s: faster than one, slower than the other.
        assert body["benchmarks"] == {
            "jobType": "shell", "comparedRuns": 2, "averageJobDuration": "9.17 minutes",
            "currentPerformanceRank": "50th percentile",
            "similarJobsComparison": {"fasterThan": 50, "similarTo": 0, "slowerThan": 50}}

        history = await w.ok(f"/job/{w.job}/metrics", interval="1m", includeHistory="true")
        assert history["historicalMetrics"] == [
            {"timestamp": z(T0), "cpu": 40, "memory": 1.0, "diskReadBytes": None, "diskWriteBytes": None,
             "connections": None, "recordsPerSecond": None, "stage": "Load"},
            {"timestamp": z(at(120)), "cpu": 60, "memory": 2.0, "diskReadBytes": 10 * 2**20,
             "diskWriteBytes": 5 * 2**20, "connections": 8, "recordsPerSecond": None, "stage": "Analyse"}]
        assert history["performanceTrends"] == {"cpuTrend": "Declining", "memoryTrend": "Declining",
                                                "throughputTrend": None}

        cpu_only = await w.ok(f"/job/{w.job}/metrics", metrics="cpu", interval="1m", includeHistory="true")
        assert set(cpu_only["currentMetrics"]) == {"resourceUtilization", "stages"}
        assert set(cpu_only["currentMetrics"]["resourceUtilization"]) == {"cpu"}
        assert set(cpu_only["historicalMetrics"][0]) == {"timestamp", "cpu", "stage"}
        assert set(cpu_only["performanceTrends"]) == {"cpuTrend"}

        error(await w.get(f"/job/{w.job}/metrics", interval="2m"), 422, "VALIDATION_ERROR", "interval")
        error(await w.get(f"/job/{w.job}/metrics", metrics="cpu,gpu"), 422, "VALIDATION_ERROR", "metrics")
        # The first run of the task has nothing to compare with.
        assert (await w.ok(f"/job/{w.earlier[0]}/metrics"))["benchmarks"] is None


async def test_batch(database_url: str) -> None:
    async with world(database_url) as w:
        body = await w.ok("/tracking/batch")
        assert set(body) == {"trackingTime", "jobCount", "summary", "jobs", "systemHealth"}
        assert body["jobCount"] == 5 and body["trackingTime"] == z(at(200))
        assert body["summary"] == {"running": 1, "queued": 2, "completed": 2, "failed": 0, "cancelled": 0}
        # Newest first.
        assert [j["jobId"] for j in body["jobs"]] == [w.queued[0], w.queued[1], w.job, *reversed(w.earlier)]
        high, normal, main = body["jobs"][:3]
        assert (high["priority"], high["queuePosition"], high["status"], high["progress"]) == ("High", 1, "Queued", 0)
        assert (normal["priority"], normal["queuePosition"]) == ("Normal", 2)
        assert main == {"jobId": w.job, "jobName": "etl", "status": "Running", "progress": 50, "startTime": z(T0),
                        "estimatedCompletion": z(at(400)), "currentStage": "Analyse", "submittedBy": None,
                        "priority": "Normal", "queuePosition": None}
        # One worker of 4 slots runs one job; two are queued.
        assert body["systemHealth"] == {"overallLoad": 25, "queueHealth": "Good", "resourceAvailability": "High",
                                        "estimatedCapacity": "1 additional job", "activeWorkers": 1}

        picked = await w.ok("/tracking/batch", jobIds=f"{w.job},not-a-guid,{w.earlier[0]}", includeMetrics="true")
        assert [j["jobId"] for j in picked["jobs"]] == [w.job, w.earlier[0]]
        assert picked["jobs"][0]["resourceUsage"] == {"cpu": 60, "memory": "2.0 GB",
                                                      "processingRate": "4 records/second"}
        assert picked["jobs"][1]["resourceUsage"] == {"cpu": None, "memory": None, "processingRate": None}
        queued = await w.ok("/tracking/batch", status="Queued")
        assert [j["jobId"] for j in queued["jobs"]] == w.queued
        assert (await w.ok("/tracking/batch", status="Completed"))["jobCount"] == 2
        assert (await w.ok("/tracking/batch", submittedBy="nobody"))["jobCount"] == 0
        error(await w.get("/tracking/batch", status="Sleeping"), 422, "VALIDATION_ERROR", "status")
        many = ",".join(["00000000-0000-0000-0000-000000000000"] * 501)
        error(await w.get("/tracking/batch", jobIds=many), 422, "VALIDATION_ERROR", "jobIds")


async def test_dependencies(database_url: str) -> None:
    async with world(database_url) as w:
        client = w.client
        prep = await create_task(client, "prep")
        report = await create_task(client, "report", dependencies=[prep["id"]])
        prep_run = await trigger(client, prep["id"])
        report_run = await trigger(client, report["id"])
        prep_uuid, report_uuid = prep_run["uuid"], report_run["uuid"]

        body = await w.ok(f"/job/{report_uuid}/dependencies")
        assert set(body) == {"jobId", "dependencies", "blockingConditions", "dependencyGraph"}
        deps = body["dependencies"]
        assert [(p["jobId"], p["status"]) for p in deps["prerequisiteJobs"]] == [(prep_uuid, "Queued")]
        assert deps["dependentJobs"] == [] and deps["resourceDependencies"] == []
        assert body["blockingConditions"] == [{"condition": f"waiting on dependency prep ({prep_uuid})",
                                               "status": "Active", "resolvedAt": None}]
        assert body["dependencyGraph"] == {
            "nodes": [{"id": prep_uuid, "type": "PrerequisiteJob", "status": "Queued"},
                      {"id": report_uuid, "type": "CurrentJob", "status": "Queued"}],
            "edges": [{"from": prep_uuid, "to": report_uuid, "type": "prerequisite"}]}
        upstream = await w.ok(f"/job/{prep_uuid}/dependencies")
        assert [(d["jobId"], d["status"]) for d in upstream["dependencies"]["dependentJobs"]] == [
            (report_uuid, "Queued")]
        assert upstream["dependencyGraph"]["edges"] == [{"from": prep_uuid, "to": report_uuid, "type": "dependency"}]
        assert upstream["blockingConditions"] == [{"condition": "waiting for a free worker", "status": "Active",
                                                   "resolvedAt": None}]

        # Drain the queue ahead of prep, then run prep: report is released and waits for a worker.
        for _ in range(3):
            claimed = await claim_one(client, w.worker, [w.run_id])
            await finish(client, w.worker, claimed)
        after = await w.ok(f"/job/{report_uuid}/dependencies")
        [prereq] = after["dependencies"]["prerequisiteJobs"]
        assert (prereq["jobId"], prereq["status"]) == (prep_uuid, "Completed") and prereq["completedAt"]
        assert [(b["status"], b["condition"]) for b in after["blockingConditions"]] == [
            ("Resolved", f"waiting on dependency prep ({prep_uuid})"), ("Active", "waiting for a free worker")]
        claimed = await claim_one(client, w.worker, [w.run_id])
        assert claimed["run_id"] == report_run["run_id"]
        running = await w.ok(f"/job/{report_uuid}/dependencies")
        assert running["dependencies"]["resourceDependencies"] == [
            {"resourceType": "ComputeNode", "resourceId": w.worker, "status": "Allocated",
             "allocatedAt": z(at(200))}]
        assert running["blockingConditions"][-1] == {"condition": "waiting for a free worker", "status": "Resolved",
                                                     "resolvedAt": z(at(200))}
        done = await w.ok(f"/job/{w.earlier[0]}/dependencies")
        assert done["dependencies"]["resourceDependencies"][0]["status"] == "Released"


ENDPOINTS = ["/job/{job}/logs", "/job/{job}/progress", "/job/{job}/timeline", "/job/{job}/metrics",
             "/job/{job}/dependencies"]


async def test_other_tenants_and_bad_guids_see_nothing(database_url: str) -> None:
    async with world(database_url) as w:
        tenant = await w.core.tenancy.create_tenant("acme")
        project = await w.core.tenancy.create_project(tenant.uuid, "web")
        default_tenant, default_project = w.base.split("/")[2:4]
        other_base = f"/api/{tenant.uuid}/{project.uuid}/execution"
        unknown = "00000000-0000-4000-8000-000000000000"
        bases = {
            "other tenant's project": other_base,
            "project under the wrong tenant": f"/api/{tenant.uuid}/{default_project}/execution",
            "other project under the default tenant": f"/api/{default_tenant}/{project.uuid}/execution",
            "malformed tenant": f"/api/not-a-guid/{default_project}/execution",
            "malformed project": f"/api/{default_tenant}/12345/execution",
            "unknown tenant": f"/api/{unknown}/{default_project}/execution",
        }
        jobs = {"default job": w.job, "malformed job": "cc0e8400", "unknown job": unknown}
        messages = set()
        for where, base in bases.items():
            for path in ENDPOINTS:
                response = await w.client.get(base + path.format(job=w.job))
                err = error(response, 404, "RESOURCE_NOT_FOUND")
                assert w.job not in response.text and "etl" not in response.text, where
                messages.add(err["message"])
        for what, job in jobs.items():
            if what == "default job":
                continue
            for path in ENDPOINTS:
                err = error(await w.client.get(w.base + path.format(job=job)), 404, "RESOURCE_NOT_FOUND")
                messages.add(err["message"])
                assert err["details"] == {}
        assert messages == {"job not found"}  # tenant, project and job failures read the same
        # The batch of another project does not list this project's jobs, even by id.
        other = (await w.client.get(other_base + "/tracking/batch", params={"jobIds": w.job})).json()
        assert other["jobCount"] == 0 and other["jobs"] == []
        assert (await w.client.get(other_base + "/tracking/batch")).json()["jobCount"] == 0
        for base in (bases["malformed tenant"], bases["project under the wrong tenant"]):
            err = error(await w.client.get(base + "/tracking/batch"), 404, "RESOURCE_NOT_FOUND")
            assert err["message"] == "project not found"
        # Subscriptions are not served.
        assert (await w.client.post(w.base + f"/job/{w.job}/subscribe", json={})).status_code in (404, 405)


@pytest.mark.parametrize("path", ENDPOINTS)
async def test_a_job_of_project_b_under_project_a_is_not_found(database_url: str, path: str) -> None:
    async with world(database_url) as w:
        tenant = await w.core.tenancy.create_tenant("acme")
        project = await w.core.tenancy.create_project(tenant.uuid, "web")
        # A run in project B, made the way outside code makes one.
        await w.core.tracking.record([TrackingEvent("b-run", "b-task", "start")], project_id=project.id)
        b_job = (await w.client.get(f"/api/{tenant.uuid}/{project.uuid}/execution/tracking/batch")).json()["jobs"]
        [b] = b_job
        assert (await w.client.get(f"/api/{tenant.uuid}/{project.uuid}/execution" + path.format(job=b["jobId"]))
                ).status_code == 200
        response = await w.client.get(w.base + path.format(job=b["jobId"]))
        err = error(response, 404, "RESOURCE_NOT_FOUND")
        assert err["message"] == "job not found" and "b-task" not in response.text
        response = await w.client.get(f"/api/{tenant.uuid}/{project.uuid}/execution" + path.format(job=w.job))
        error(response, 404, "RESOURCE_NOT_FOUND")


async def test_a_key_scoped_to_another_project_sees_nothing(database_url: str) -> None:
    async with world(database_url) as w:
        tenant = await w.core.tenancy.create_tenant("acme")
        project = await w.core.tenancy.create_project(tenant.uuid, "web")
        scoped = await w.core.access.create_key("web-viewer", "viewer", project.uuid)
        admin = await w.core.access.create_key("root", "admin")  # no project: every project
        as_scoped = {"Authorization": f"Bearer {scoped.secret}"}
        for path in ENDPOINTS:
            response = await w.client.get(w.base + path.format(job=w.job), headers=as_scoped)
            assert error(response, 404, "RESOURCE_NOT_FOUND")["message"] == "job not found"
            response = await w.client.get(w.base + path.format(job=w.job),
                                          headers={"Authorization": f"Bearer {admin.secret}"})
            assert response.status_code == 200, response.text
        error(await w.client.get(w.base + "/tracking/batch", headers=as_scoped), 404, "RESOURCE_NOT_FOUND")
        own = await w.client.get(f"/api/{tenant.uuid}/{project.uuid}/execution/tracking/batch", headers=as_scoped)
        assert own.status_code == 200 and own.json()["jobCount"] == 0
        error(await w.client.get(w.base + "/tracking/batch"), 401, "AUTHENTICATION_ERROR")
