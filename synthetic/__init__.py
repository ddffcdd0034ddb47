"""Invented clinics, citizens, visits and GIAMDINHHS dossiers for demos, tests and benchmarks: no real people."""
