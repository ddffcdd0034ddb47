-- Sensitive tables (XML6 HIV/AIDS, XML15 tuberculosis) apart from the record, so list views never read them;
-- visits waiting for their BHYT card to be mapped to a person.

alter table health_book_visits add column sensitive jsonb not null default '[]';

create table pending_visits (
    facility_code    text        not null,
    visit_code       text        not null,
    card_number      text        not null,
    version          bigint      not null,
    event_id         text        not null,
    year             int         not null,
    admitted_at      timestamp   not null,
    discharged_at    timestamp   not null,
    record           jsonb       not null,
    sensitive        jsonb       not null,
    clinic_key_id    text        not null,
    signature        bytea       not null,
    signed_at        timestamptz not null,
    source_partition int         not null,
    source_offset    bigint      not null,
    received_at      timestamptz not null default clock_timestamp(),
    primary key (facility_code, visit_code)
);

create index pending_visits_by_card on pending_visits (card_number);
