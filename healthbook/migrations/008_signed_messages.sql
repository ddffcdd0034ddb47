-- Each visit keeps the envelope its clinic signed, exactly as published, and the registered key (and
-- certificate) it verified with, so a reply can carry them and anyone holding it can check the signature
-- offline. Rows projected before this migration have none; replay fills them in.

alter table health_book_visits add column signed_message bytea;
alter table health_book_visits add column clinic_public_key bytea;
alter table health_book_visits add column clinic_certificate bytea;

alter table pending_visits add column signed_message bytea;
alter table pending_visits add column clinic_public_key bytea;
alter table pending_visits add column clinic_certificate bytea;
