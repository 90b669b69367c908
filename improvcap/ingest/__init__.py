"""Files recorded elsewhere (a cinema camera's card, a field recorder, a phone) brought into a take on its
shared clock: `source` reads the file, `align` places it (timecode, LTC, slates, audio), `run` writes it in."""
