"""Exports for training pipelines (`improvcap export`): the point where data leaves the studio.

A take is exported only when it verifies and every performer in it allowed the stated use, judged against
the performers file as it is at export time (consent.py). The chosen takes become WebDataset shards of
clips (webdataset.py, shards.py, clip_media.py) or one MCAP file per take (mcap_file.py). Every export
carries its provenance (provenance.py: export.json with the decisions, hashes and an ODRL policy per
performer; croissant.py; card.py) and can be re-checked (check.py, `verify-export`). A performer can be
told every take and export that holds them (performer_report.py).
"""
