"""The query consumer: answers signed integration requests with the citizen's health book for a year."""

from __future__ import annotations

import asyncio
import logging
from functools import partial
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from consumers.consent import EMPTY_HISTORY, Refusal, check_request, load_trusted_keys
from consumers.health_book import visit_detail, visits_of
from healthbook import observability as metrics
from healthbook.config import Settings
from healthbook.database import connect_pool
from healthbook.retry import while_unreachable
from schemas import catalogue, wire
from schemas.errors import ContractError

log = logging.getLogger(__name__)
NOT_FOUND = "Không tìm thấy lượt khám này trong sổ sức khỏe của bạn (no such visit in your health book)."


def refused(request_id: str, refusal: Refusal, year: int | None = None) -> dict[str, Any]:
    """A reply that serves nothing."""
    return {
        "request_id": request_id,
        "status": "refused",
        "refusal_code": refusal.code,
        "message": refusal.message,
        "year": year,
        "visits": [],
    }


async def answer(conn: asyncpg.Connection, raw: bytes, trusted: dict[str, bytes]) -> dict[str, Any]:
    """Decide one request, record consent and access, and build its reply."""
    try:
        request = wire.decode(raw, catalogue.INTEGRATION_REQUEST)
    except ContractError as exc:
        await _log(conn, "", None, None, "refused", "malformed")
        return refused("", Refusal("malformed", f"Yêu cầu không đọc được ({exc})."))
    request_id, personal_id, year = request["request_id"], request["personal_id"], request["year"]
    refusal = check_request(request, trusted)
    async with conn.transaction():
        if refusal:
            await _log(conn, request_id, personal_id, year, "refused", refusal.code)
            return refused(request_id, refusal, year)
        await conn.execute(
            "insert into consents (personal_id, confirmed_at, request_id) values ($1, $2, $3) "
            "on conflict (personal_id) do nothing", personal_id, request["requested_at"], request_id)
        detail = request.get("detail")
        if detail:
            visit = await visit_detail(conn, personal_id, detail["facility_code"], detail["visit_code"])
            if visit is None:
                await _log(conn, request_id, personal_id, year, "refused", "not_found")
                return refused(request_id, Refusal("not_found", NOT_FOUND), year)
            await _log(conn, request_id, personal_id, year, "served_detail", None, 1)
            return {"request_id": request_id, "status": "ok", "refusal_code": None, "year": year, "visits": [visit],
                    "message": f"Chi tiết lượt khám {detail['visit_code']} tại cơ sở {detail['facility_code']}"}
        visits = await visits_of(conn, personal_id, year)
        await _log(conn, request_id, personal_id, year, "served", None, len(visits))
    message = f"{len(visits)} lượt khám chữa bệnh BHYT năm {year}" if visits else EMPTY_HISTORY
    return {"request_id": request_id, "status": "ok", "refusal_code": None, "message": message,
            "year": year, "visits": visits}


async def _log(conn: asyncpg.Connection, request_id: str, personal_id: str | None, year: int | None, outcome: str,
               refusal_code: str | None, visits: int = 0) -> None:
    await conn.execute(
        "insert into access_log (request_id, personal_id, year, outcome, refusal_code, visits) "
        "values ($1, $2, $3, $4, $5, $6)", request_id, personal_id, year, outcome, refusal_code, visits)


async def _answer(pool: asyncpg.Pool, raw: bytes, trusted: dict[str, bytes]) -> dict[str, Any]:
    async with pool.acquire() as conn:
        return await answer(conn, raw, trusted)


async def run(settings: Settings, stop: asyncio.Event | None = None) -> None:
    """Consume integration requests and produce replies until stop is set."""
    trusted = load_trusted_keys(settings.identity_keys_file)
    pool = await while_unreachable("connect to PostgreSQL",
                                   partial(connect_pool, settings.database_url, min_size=1, max_size=2))
    consumer = AIOKafkaConsumer(
        settings.topics.integration_requests,
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=settings.query_group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all", enable_idempotence=True)
    await consumer.start()
    await producer.start()
    health = await metrics.serve(settings.query_metrics_port, lambda: (True, {}), "query-consumer",
                                 settings.metrics_host)
    log.info("query consumer ready on %s", settings.topics.integration_requests)
    stop = stop or asyncio.Event()
    try:
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=500, max_records=100)
            for messages in batches.values():
                for message in messages:
                    reply = await while_unreachable("answer a request", partial(_answer, pool, message.value, trusted))
                    await producer.send_and_wait(
                        settings.topics.integration_replies,
                        wire.encode(catalogue.INTEGRATION_REPLY, reply),
                        key=reply["request_id"].encode(),
                    )
                    metrics.REQUESTS.labels(reply["refusal_code"] or reply["status"]).inc()
                    log.info("request %s: %s %s", reply["request_id"], reply["status"], reply["refusal_code"] or "",
                             extra={"request_id": reply["request_id"], "partition": message.partition,
                                    "offset": message.offset})
            if batches:
                await consumer.commit()
    finally:
        if health:
            await health.cleanup()
        await consumer.stop()
        await producer.stop()
        await pool.close()
