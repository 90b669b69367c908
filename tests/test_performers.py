"""Performers and consent: the performers file, refusals before recording, and the tamper-evident record."""
from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path

import pytest

from improvcap.errors import ImprovcapError, PerformersError
from improvcap.performers import (
    Performer, consent_digest, consent_record, consent_summary, load_performers, resolve, take_performers,
)

TODAY = dt.date(2026, 11, 25)
SHA_A = "9F2C" + "ab" * 30  # upper case on purpose: stored lower-case
SHA_C = "0" * 64

GOOD = f"""
[performers.ana]
name = "Ana Example"
consent_form = "forms/ana-2026-11-20.pdf"
consent_sha256 = "{SHA_A}"
signed = "2026-11-20"
allowed = ["llm-training", "voice-synthesis"]
denied = ["emotion-recognition"]
revoked = false

[performers.cam]
name = "Cam Zoë"
consent_form = "forms/cam.pdf"
consent_sha256 = "{SHA_C}"
signed = 2026-11-21
denied = ["voice-synthesis"]
notes = "prefers the left mic"

[performers.dee]
name = "Dee"
consent_form = "forms/dee.pdf"
consent_sha256 = "{SHA_C}"
signed = 2026-10-01
revoked = true
revoked_on = "2026-11-21"

[performers."v.2"]
name = "Vee Two"
consent_form = "forms/v2.pdf"
consent_sha256 = "{SHA_C}"
signed = "2026-01-02"
revoked = true
"""


def write(folder: Path, text: str, name: str = "performers.toml") -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def form(folder: Path, rel: str, data: bytes) -> str:
    """Write a consent form and return its sha256, as a studio records it when the form is signed."""
    path = folder / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def test_good_file_string_and_toml_dates(tmp_path):
    people = load_performers(write(tmp_path, GOOD), today=TODAY)
    assert list(people) == ["ana", "cam", "dee", "v.2"]
    ana, cam, dee = people["ana"], people["cam"], people["dee"]
    assert ana == Performer(id="ana", name="Ana Example", consent_form="forms/ana-2026-11-20.pdf",
                            consent_sha256=SHA_A.lower(), signed=dt.date(2026, 11, 20),
                            allowed=("llm-training", "voice-synthesis"), denied=("emotion-recognition",))
    assert cam.signed == dt.date(2026, 11, 21) and cam.allowed == () and cam.notes == "prefers the left mic"
    assert dee.revoked and dee.revoked_on == dt.date(2026, 11, 21)
    assert people["v.2"].revoked and people["v.2"].revoked_on is None
    assert ana.as_dict() == {
        "id": "ana", "name": "Ana Example", "consent_form": "forms/ana-2026-11-20.pdf",
        "consent_sha256": SHA_A.lower(), "signed": "2026-11-20",
        "allowed": ["llm-training", "voice-synthesis"], "denied": ["emotion-recognition"], "revoked": False,
    }
    assert "notes" not in cam.as_dict()  # private remarks stay in the performers file
    json.dumps(cam.as_dict())


def test_signed_today_is_accepted_and_default_today_is_the_local_date(tmp_path):
    today = dt.date.today().isoformat()
    path = write(tmp_path, GOOD.replace('signed = "2026-11-20"', f'signed = "{today}"'))
    assert load_performers(path)["ana"].signed.isoformat() == today


def test_empty_file_has_no_performers(tmp_path):
    people = load_performers(write(tmp_path, "# nobody yet\n"), today=TODAY)
    assert people == {}
    with pytest.raises(PerformersError, match=r"^unknown performer 'ana' \(known: none\)$"):
        resolve(["ana"], people, tmp_path)


def _ana(**changes: str) -> str:
    """A file with only `ana`, whose lines are replaced/added: key -> TOML value ('' removes the key)."""
    lines = {
        "name": '"Ana Example"', "consent_form": '"forms/ana.pdf"', "consent_sha256": f'"{SHA_A}"',
        "signed": '"2026-11-20"', "allowed": '["llm-training"]', "denied": '["emotion-recognition"]',
    }
    lines.update(changes)
    return "[performers.ana]\n" + "".join(f"{k} = {v}\n" for k, v in lines.items() if v)


@pytest.mark.parametrize("text, key, problem", [
    ("[performers.ana\n", None, "not valid TOML"),
    ('title = "x"\n' + _ana(), "title", "unknown key (a performers file holds only [performers.<id>] tables)"),
    ("[performer.ana]\nname = 'x'\n", "performer", "unknown key (did you mean 'performers'?)"),
    ("performers = [1]\n", "performers", "expected [performers.<id>] tables"),
    ("[performers]\nana = 'Ana'\n", "performers.ana", "expected a table [performers.ana], got 'Ana'"),
    ('[performers."ana smith"]\nname = "x"\n', 'performers."ana smith"', "performer id must be letters"),
    (_ana(name=""), "performers.ana.name", "missing"),
    (_ana(name='"  "'), "performers.ana.name", "must not be empty"),
    (_ana(name="3"), "performers.ana.name", "expected a string, got 3"),
    (_ana(consent_form=""), "performers.ana.consent_form", "missing"),
    (_ana(consent_form='""'), "performers.ana.consent_form", "must not be empty"),
    (_ana(consent_form="true"), "performers.ana.consent_form", "expected a string, got True"),
    (_ana(consent_sha256=""), "performers.ana.consent_sha256", "missing"),
    (_ana(consent_sha256=f'"{SHA_A[:-1]}"'), "performers.ana.consent_sha256", "expected 64 hexadecimal digits"),
    (_ana(consent_sha256=f'"{SHA_A[:-1]}g"'), "performers.ana.consent_sha256", "expected 64 hexadecimal digits"),
    (_ana(signed=""), "performers.ana.signed", "missing"),
    (_ana(signed='"20 Nov"'), "performers.ana.signed", "expected a date YYYY-MM-DD, got '20 Nov'"),
    (_ana(signed='"20261120"'), "performers.ana.signed", "expected a date YYYY-MM-DD, got '20261120'"),
    (_ana(signed='"2026-02-30"'), "performers.ana.signed", "not a valid date: '2026-02-30'"),
    (_ana(signed="2026-11-20T10:00:00Z"), "performers.ana.signed",
     "expected a date YYYY-MM-DD, got 2026-11-20T10:00:00+00:00"),
    (_ana(signed="20261120"), "performers.ana.signed", "expected a date YYYY-MM-DD, got 20261120"),
    (_ana(signed='"2026-11-26"'), "performers.ana.signed", "2026-11-26 is in the future (today is 2026-11-25)"),
    (_ana(signed="2027-01-01"), "performers.ana.signed", "2027-01-01 is in the future"),
    (_ana(allowed='"llm-training"'), "performers.ana.allowed", "expected a list of scope names, got 'llm-training'"),
    (_ana(allowed='["llm-training", 2]'), "performers.ana.allowed", "expected non-empty scope names, got 2"),
    (_ana(allowed='[""]'), "performers.ana.allowed", "expected non-empty scope names, got ''"),
    (_ana(denied="{ a = 1 }"), "performers.ana.denied", "expected a list of scope names, got a table"),
    (_ana(denied='[" "]'), "performers.ana.denied", "expected non-empty scope names"),
    (_ana(denied='["emotion-recognition", "llm-training"]'), "performers.ana.denied",
     "'llm-training' is both allowed and denied"),
    (_ana(revoked='"no"'), "performers.ana.revoked", "expected true or false, got 'no'"),
    (_ana(revoked="true", revoked_on='"yesterday"'), "performers.ana.revoked_on", "expected a date YYYY-MM-DD"),
    (_ana(revoked_on="2026-11-21"), "performers.ana.revoked_on", "given but revoked is false"),
    (_ana(revoked="true", revoked_on="2026-11-19"), "performers.ana.revoked_on",
     "2026-11-19 is before signed (2026-11-20)"),
    (_ana(revoked="true", revoked_on="2026-12-01"), "performers.ana.revoked_on", "is in the future"),
    (_ana(notes="[1]"), "performers.ana.notes", "expected a string, got [1]"),
    (_ana(consent="true"), "performers.ana.consent",
     "unknown key (did you mean 'consent_form'?) (expected name, consent_form,"),
    (_ana(**{'"my key"': '"x"'}), 'performers.ana."my key"', "unknown key"),
])
def test_every_problem_is_one_line_naming_file_and_key(tmp_path, text, key, problem):
    path = write(tmp_path, text)
    with pytest.raises(PerformersError) as info:
        load_performers(path, today=TODAY)
    message = str(info.value)
    assert "\n" not in message
    head = f"{path}: {key}: " if key else f"{path}: "
    assert message.startswith(head), message
    assert problem in message, message
    assert isinstance(info.value, ImprovcapError) and isinstance(info.value, ValueError)
    assert info.value.exit_code == 2


def test_missing_and_unreadable_files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(PerformersError, match=r"^performers\.toml: not found \(.*performers\.toml; .*--performers"):
        load_performers(Path("performers.toml"), today=TODAY)
    (tmp_path / "bad.toml").write_bytes(b"[performers.ana]\nname = '\xff'\n")
    with pytest.raises(PerformersError, match=r"^bad\.toml: not UTF-8 text$"):
        load_performers(Path("bad.toml"), today=TODAY)
    (tmp_path / "dir.toml").mkdir()
    with pytest.raises(PerformersError, match=r"^dir\.toml: cannot read: "):
        load_performers(Path("dir.toml"), today=TODAY)


def test_scopes_named_twice_are_one_scope(tmp_path):
    people = load_performers(write(tmp_path, _ana(allowed='["a", "b", "a"]')), today=TODAY)
    assert people["ana"].allowed == ("a", "b")


# --- resolving ----------------------------------------------------------------------------------

def test_unknown_revoked_and_duplicate_ids(tmp_path):
    people = load_performers(write(tmp_path, GOOD), today=TODAY)
    with pytest.raises(PerformersError, match=r"^unknown performer 'bob' \(known: ana, cam, dee, v\.2\)$"):
        resolve(["ana", "bob"], people, tmp_path)
    with pytest.raises(PerformersError, match=r"^performer 'dee' has revoked consent \(2026-11-21\)$"):
        resolve(["ana", "dee"], people, tmp_path)
    with pytest.raises(PerformersError, match=r"^performer 'v\.2' has revoked consent$"):
        resolve(["v.2"], people, tmp_path)
    entries = resolve(["cam", "ana", "cam", "ana"], people, tmp_path)
    assert [e["id"] for e in entries] == ["cam", "ana"]  # given order, repeats collapsed
    assert entries[1] == {**people["ana"].as_dict(), "consent_form_verified": False}
    assert set(entries[0]) == {"id", "name", "consent_form", "consent_sha256", "consent_form_verified",
                               "signed", "allowed", "denied", "revoked"}
    assert all(e["revoked"] is False for e in entries)
    assert resolve([], people, tmp_path) == []


def test_unknown_is_refused_before_any_form_is_read(tmp_path):
    """Every id is checked against the file before any consent form is hashed."""
    form(tmp_path, "forms/ana-2026-11-20.pdf", b"tampered")
    people = load_performers(write(tmp_path, GOOD), today=TODAY)
    with pytest.raises(PerformersError, match="unknown performer 'zed'"):
        resolve(["ana", "zed"], people, tmp_path)


def test_consent_form_verification(tmp_path):
    sha_ana = form(tmp_path, "forms/ana.pdf", b"%PDF-1.7 signed by Ana")
    sha_cam = form(tmp_path, "forms/cam.pdf", b"%PDF-1.7 signed by Cam")
    text = (_ana(consent_sha256=f'"{sha_ana.upper()}"')
            + f'\n[performers.cam]\nname = "Cam"\nconsent_form = "forms/cam.pdf"\nconsent_sha256 = "{sha_cam}"\n'
              'signed = 2026-11-21\n'
            + f'\n[performers.eve]\nname = "Eve"\nconsent_form = "forms/eve.pdf"\nconsent_sha256 = "{SHA_C}"\n'
              'signed = 2026-11-21\n')
    path = write(tmp_path, text)
    people = load_performers(path, today=TODAY)
    entries = resolve(["ana", "cam", "eve"], people, path.parent)
    assert [(e["id"], e["consent_form_verified"]) for e in entries] == [("ana", True), ("cam", True), ("eve", False)]
    assert entries[0]["consent_sha256"] == sha_ana  # compared case-insensitively, stored lower-case

    # the form is edited after the fact: the take is refused
    (tmp_path / "forms/cam.pdf").write_bytes(b"%PDF-1.7 signed by Cam, then edited")
    with pytest.raises(PerformersError) as info:
        resolve(["ana", "cam"], people, path.parent)
    assert str(info.value) == ("cam: consent form forms/cam.pdf does not match consent_sha256 "
                               "(the form changed since it was recorded)")
    assert resolve(["ana"], people, path.parent)[0]["consent_form_verified"] is True

    # forms are looked up relative to the performers file's folder, not the current one
    assert resolve(["ana"], people, tmp_path / "elsewhere")[0]["consent_form_verified"] is False

    # a folder where the form should be is refused rather than taken as "absent"
    (tmp_path / "forms/eve.pdf").mkdir()
    with pytest.raises(PerformersError, match=r"^eve: consent form forms/eve\.pdf is not a file$"):
        resolve(["eve"], people, path.parent)


def test_absolute_consent_form_path(tmp_path):
    vault = tmp_path / "vault"
    sha = form(vault, "ana.pdf", b"signed")
    session = tmp_path / "session"
    session.mkdir()
    path = write(session, _ana(consent_form=json.dumps(str(vault / "ana.pdf")), consent_sha256=f'"{sha}"'))
    entries = take_performers(["ana"], path, today=TODAY)
    assert entries[0]["consent_form_verified"] is True
    assert entries[0]["consent_form"] == str(vault / "ana.pdf")


def test_take_performers_needs_no_file_without_ids(tmp_path):
    assert take_performers([], tmp_path / "missing.toml") == []
    with pytest.raises(PerformersError, match="not found"):
        take_performers(["ana"], tmp_path / "missing.toml")


# --- the record written into the take ---------------------------------------------------------------

def _entries(tmp_path: Path) -> list[dict]:
    return resolve(["ana", "cam"], load_performers(write(tmp_path, GOOD), today=TODAY), tmp_path)


def test_consent_record_is_canonical(tmp_path):
    entries = _entries(tmp_path)
    data = consent_record(entries)
    shuffled = [dict(reversed(list(e.items()))) for e in entries]
    assert list(shuffled[0]) != list(entries[0])
    assert consent_record(shuffled) == data
    assert data.endswith(b"}\n") and data.count(b"\n") == 1
    assert b", " not in data and b": " not in data
    assert "Cam Zoë".encode("utf-8") in data  # UTF-8, not \u escapes
    doc = json.loads(data)
    assert doc == {"format": "improvcap.performers", "version": 1, "performers": entries}
    assert consent_digest(entries) == hashlib.sha256(data).hexdigest()
    # the take folder's file hash of performers.json equals performers_sha256
    (tmp_path / "performers.json").write_bytes(data)
    assert hashlib.sha256((tmp_path / "performers.json").read_bytes()).hexdigest() == consent_digest(shuffled)
    # a record of nobody is still a valid, stable record
    assert json.loads(consent_record([]))["performers"] == []
    assert consent_digest([]) == consent_digest([])


def test_digest_changes_when_any_field_changes(tmp_path):
    entries = _entries(tmp_path)
    base = consent_digest(entries)
    seen = {base}
    for i, entry in enumerate(entries):
        for key, value in entry.items():
            if isinstance(value, bool):
                changed = not value
            elif isinstance(value, list):
                changed = [*value, "extra-scope"]
            else:
                changed = value + "x"
            edited = [dict(e) for e in entries]
            edited[i][key] = changed
            digest = consent_digest(edited)
            assert digest not in seen, (i, key)
            seen.add(digest)
    assert consent_digest(entries[::-1]) != base  # the order of performers is part of the record
    assert consent_digest(entries[:1]) != base
    assert len(seen) == 1 + sum(len(e) for e in entries)


def test_consent_summary(tmp_path):
    entries = _entries(tmp_path)
    assert consent_summary(entries) == {
        "emotion-recognition": {"allowed": [], "denied": ["ana"], "unspecified": ["cam"]},
        "llm-training": {"allowed": ["ana"], "denied": [], "unspecified": ["cam"]},
        "voice-synthesis": {"allowed": ["ana"], "denied": ["cam"], "unspecified": []},
    }
    extra = consent_summary(entries, scopes=["motion-synthesis", "llm-training"])
    assert extra["motion-synthesis"] == {"allowed": [], "denied": [], "unspecified": ["ana", "cam"]}
    assert list(extra) == sorted(extra)
    assert consent_summary([]) == {}
    assert consent_summary([], scopes=["x"]) == {"x": {"allowed": [], "denied": [], "unspecified": []}}
