-- Batches the worker failed on with a bug (not a content or infrastructure failure), by offset range:
-- after the restart they are retried in halves down to the one message, which is dead-lettered.
create table suspect_batches (
    topic        text        not null,
    partition    int         not null,
    first_offset bigint      not null,
    last_offset  bigint      not null,
    error        text        not null,
    at           timestamptz not null default clock_timestamp(),
    primary key (topic, partition, first_offset, last_offset)
);
