"""Files editors open already synced: MOV remuxes with a `tmcd` start timecode, the WAVs with bext and
iXML, and OpenTimelineIO timelines of each take and each session (FCP XML and CMX EDL where the OTIO
adapters are installed)."""
