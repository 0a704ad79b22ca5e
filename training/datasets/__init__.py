"""Data sets: generated demo data, users' own formats, and the data set check."""
