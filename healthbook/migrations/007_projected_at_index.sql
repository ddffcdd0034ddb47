-- A replay merges into its rebuilt book only the rows the live worker wrote while it ran, found by
-- when they were written; without this index that lookup reads the whole book under the swap's lock.
create index health_book_visits_projected_at on health_book_visits (projected_at);
