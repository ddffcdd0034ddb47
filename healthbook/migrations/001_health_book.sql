-- The per-citizen health book, the pipeline's outcome counters, consent and access log.

create table health_book_visits (
    facility_code    text        not null,  -- MA_CSKCB
    visit_code       text        not null,  -- MA_LK
    personal_id      text        not null,  -- SO_CCCD
    version          bigint      not null,
    event_id         text        not null,
    year             int         not null,  -- year of admission
    admitted_at      timestamp   not null,  -- NGAY_VAO, clinic local time
    discharged_at    timestamp   not null,  -- NGAY_RA
    record           jsonb       not null,  -- the validated visit event as the clinic signed it
    clinic_key_id    text        not null,
    signature        bytea       not null,
    signed_at        timestamptz not null,
    source_partition int         not null,
    source_offset    bigint      not null,
    projected_at     timestamptz not null default clock_timestamp(),
    primary key (facility_code, visit_code)
);

create index health_book_visits_by_citizen on health_book_visits (personal_id, year, admitted_at);

-- consumed = accepted + duplicate + sum(rejected:*)
create table pipeline_counts (
    outcome text   primary key,
    count   bigint not null
);

create table consents (
    personal_id  text        primary key,
    confirmed_at timestamptz not null,
    request_id   text        not null
);

-- Decree 13/2023: every access to a citizen's health data is logged.
create table access_log (
    id           bigserial   primary key,
    request_id   text        not null,
    personal_id  text,
    year         int,
    outcome      text        not null,
    refusal_code text,
    visits       int         not null default 0,
    at           timestamptz not null default now()
);
