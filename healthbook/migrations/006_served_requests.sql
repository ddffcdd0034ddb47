-- Each integration request id is served once: the same signed confirmation sent again from another
-- place on the topic is refused as replayed. Redelivery of the same record (same place) is answered again.
create table served_requests (
    request_id       text        primary key,
    source_partition int         not null,
    source_offset    bigint      not null,
    requested_at     timestamptz not null,
    first_seen       timestamptz not null default clock_timestamp()
);
create index served_requests_requested_at on served_requests (requested_at);
