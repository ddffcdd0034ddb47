"""The QĐ 4750 adapter: read GIAMDINHHS dossiers, verify their signature, map each HOSO to a visit, publish."""
