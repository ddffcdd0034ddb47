-- Operator bookkeeping: dead letters re-driven (each at most once), and the worker's last errors.

create table dlq_retries (
    dlq_partition    int         not null,
    dlq_offset       bigint      not null,
    retried_at       timestamptz not null default clock_timestamp(),
    visits_partition int         not null,
    visits_offset    bigint      not null,
    primary key (dlq_partition, dlq_offset)
);

create table worker_errors (
    id        bigserial   primary key,
    at        timestamptz not null default clock_timestamp(),
    worker_id text        not null,
    message   text        not null
);
