-- Whether a visit is sensitive is judged once, when the worker checks it, and kept with its row together
-- with the fingerprint of the sensitive-list settings it was judged under. The query consumer shows a
-- year's list from the stored judgement when the fingerprint is its own, and judges the visit again
-- otherwise (rows projected before this migration, or after the lists changed): a stale judgement is
-- never trusted.

alter table health_book_visits add column sealed boolean;
alter table health_book_visits add column sealed_under text;

alter table pending_visits add column sealed boolean;
alter table pending_visits add column sealed_under text;
