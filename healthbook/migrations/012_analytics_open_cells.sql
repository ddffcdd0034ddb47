-- Cells that went out with at least k people: a later visit in one is released at once, without
-- counting again. Only waiting visits are then read per batch, never every visit a busy cell holds.
create table analytics_open_cells (
    subscriber text not null,
    level smallint not null,   -- 0 as the policy gives it, 1 widened
    cell text not null,
    primary key (subscriber, level, cell)
);
insert into analytics_open_cells
    select distinct subscriber, released_as, case when released_as = 0 then fine_cell else coarse_cell end
    from analytics_held where state = 'released';
