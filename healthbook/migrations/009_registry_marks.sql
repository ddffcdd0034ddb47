-- The newest revision of each registry record a worker has applied: a card's updated_at, a clinic
-- key's issued_at. A worker starting after compaction left only an old record re-sent by someone
-- holding a registry's write access still knows it is old, and ignores it.

create table registry_marks (
    registry text not null,      -- 'identity_cards' or 'clinic_keys'
    record_key text not null,    -- the card number, or clinic_code/key_id
    revision bigint not null,    -- epoch milliseconds
    primary key (registry, record_key)
);
