-- The analytics release stage: what it has read of visits.deidentified, each visit held per subscriber
-- until its cell holds k people, the records released and not yet acknowledged by the broker, each
-- release window's tally, and the aggregate feed. One transaction per batch writes all of it with the
-- offsets, so a restart neither loses a visit nor releases one twice.

create table analytics_offsets (
    topic text not null,
    partition int not null,
    next_offset bigint not null,
    primary key (topic, partition)
);

-- The newest version of each de-identified visit, for the aggregate feed.
create table analytics_visits (
    visit_ref text primary key,
    version bigint not null,
    person text not null,
    admitted_month text not null,
    province_code text,
    age_band text not null,
    sex int not null,
    main_diagnosis_code text not null
);
create index analytics_visits_month on analytics_visits (admitted_month);

create table analytics_held (
    subscriber text not null,
    visit_ref text not null,          -- the internal reference (never released)
    release_key text not null,        -- the subscriber's own visit_ref: the released record's key
    version bigint not null,
    admitted_month text not null,
    person text not null,             -- the internal pseudonym (never released): cells count people by it
    fine_cell text not null,
    coarse_cell text not null,
    fine_value bytea not null,        -- the framed ReleasedVisit as the policy gives it
    coarse_value bytea not null,      -- and widened, for window close
    state text not null check (state in ('waiting', 'released', 'suppressed')),
    released_as smallint,             -- 0 as the policy gives it, 1 widened
    primary key (subscriber, visit_ref)
);
create index analytics_held_fine on analytics_held (subscriber, fine_cell);
create index analytics_held_coarse on analytics_held (subscriber, coarse_cell);
create index analytics_held_waiting on analytics_held (subscriber, admitted_month) where state = 'waiting';

-- Released records in release order; a row goes once the broker has acknowledged it.
create table analytics_outbox (
    subscriber text not null,
    seq bigint not null,
    key bytea not null,
    value bytea not null,
    primary key (subscriber, seq)
);

create table analytics_sequences (
    subscriber text primary key,
    next_seq bigint not null,         -- the next release sequence to hand out
    published_seq bigint not null     -- every record up to here is on the subscriber's topic
);

create table analytics_windows (
    subscriber text not null,
    admitted_month text not null,
    released int not null default 0,    -- as the policy gives them
    generalised int not null default 0, -- widened at close
    suppressed int not null default 0,  -- in a cell of fewer than k people even widened
    closed_at timestamptz,
    primary key (subscriber, admitted_month)
);

-- Visits per ICD-10 code and per chapter x province of residence x month x age band x sex; counts under k
-- are withheld, with more where a group's total would show them (k_anonymity.suppress_small_counts).
create table analytics_visit_counts (
    admitted_month text not null,
    province_code text not null,
    age_band text not null,
    sex int not null,
    grain text not null check (grain in ('chapter', 'code')),
    diagnosis text not null,
    visits int not null,
    primary key (admitted_month, province_code, age_band, sex, grain, diagnosis)
);

-- Records of visits.deidentified the stage could not read: kept with why, never silently skipped.
create table analytics_unreadable (
    topic text not null,
    partition int not null,
    "offset" bigint not null,
    reason text not null,
    value bytea,
    primary key (topic, partition, "offset")
);
