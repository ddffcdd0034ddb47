-- The next offset to apply per visits partition, written in the same transaction as the batch it ends:
-- a message below it is already in the health book, the counters and the dead-letter topic.
create table applied_offsets (
    topic       text   not null,
    partition   int    not null,
    next_offset bigint not null,
    primary key (topic, partition)
);
