"""Writers subscribe to one stream's records and stream them to disk (DESIGN section 5)."""
