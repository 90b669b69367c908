"""`croissant.json`: the export described as an MLCommons Croissant 1.0 dataset, with the Responsible-AI
fields a data team is asked for (how the data was collected, what personal information it holds, which
uses it may serve), written from the export's manifest."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

CROISSANT = "croissant.json"
CONFORMS_TO = "http://mlcommons.org/croissant/1.0"
CONTEXT: dict[str, Any] = {
    "@language": "en",
    "@vocab": "https://schema.org/",
    "citeAs": "cr:citeAs",
    "column": "cr:column",
    "conformsTo": "dct:conformsTo",
    "cr": "http://mlcommons.org/croissant/",
    "rai": "http://mlcommons.org/croissant/RAI/",
    "data": {"@id": "cr:data", "@type": "@json"},
    "equivalentProperty": "cr:equivalentProperty",
    "samplingRate": "cr:samplingRate",
    "dataType": {"@id": "cr:dataType", "@type": "@vocab"},
    "dct": "http://purl.org/dc/terms/",
    "examples": {"@id": "cr:examples", "@type": "@json"},
    "extract": "cr:extract",
    "field": "cr:field",
    "fileProperty": "cr:fileProperty",
    "fileObject": "cr:fileObject",
    "fileSet": "cr:fileSet",
    "format": "cr:format",
    "includes": "cr:includes",
    "isLiveDataset": "cr:isLiveDataset",
    "jsonPath": "cr:jsonPath",
    "key": "cr:key",
    "md5": "cr:md5",
    "parentField": "cr:parentField",
    "path": "cr:path",
    "recordSet": "cr:recordSet",
    "references": "cr:references",
    "regex": "cr:regex",
    "repeated": "cr:repeated",
    "replace": "cr:replace",
    "sc": "https://schema.org/",
    "separator": "cr:separator",
    "source": "cr:source",
    "subField": "cr:subField",
    "transform": "cr:transform",
}
MEDIA = {
    ".tar": "application/x-tar",
    ".mcap": "application/x-mcap",
    ".json": "application/json",
    ".md": "text/markdown",
}
# what a WebDataset sample holds: (file set id, members, encoding)
SAMPLE_FILES = (
    ("videos", "*.mp4", "video/mp4"),
    ("audio", "*.flac", "audio/flac"),
    ("motion", "*.npy", "application/x-npy"),
    ("descriptions", "*.json", "application/json"),
)


def croissant(manifest: Mapping[str, Any], outputs: list[Mapping[str, Any]], license_id: str) -> dict[str, Any]:
    """The Croissant document of an export whose data files are `outputs` (path, sha256)."""
    scope = manifest["scope"]
    takes = manifest.get("takes", [])
    sessions = sorted({str(t.get("session")) for t in takes})
    starts = sorted(str(t.get("t0_utc")) for t in takes if t.get("t0_utc"))
    people = len(manifest.get("performers", []))
    streams = manifest.get("options", {})
    distribution: list[dict[str, Any]] = []
    for o in outputs:
        suffix = "." + o["path"].rsplit(".", 1)[-1]
        distribution.append(
            {
                "@type": "cr:FileObject",
                "@id": o["path"],
                "name": o["path"],
                "contentUrl": o["path"],
                "encodingFormat": MEDIA.get(suffix, "application/octet-stream"),
                "sha256": o["sha256"],
                "contentSize": f"{o['bytes']} B",
            }
        )
    shards = [o["path"] for o in outputs if o["path"].endswith(".tar")]
    if shards:
        for file_set, includes, encoding in SAMPLE_FILES:
            distribution.append(
                {
                    "@type": "cr:FileSet",
                    "@id": file_set,
                    "name": file_set,
                    "containedIn": [{"@id": s} for s in shards],
                    "encodingFormat": encoding,
                    "includes": includes,
                }
            )
    return {
        "@context": CONTEXT,
        "@type": "sc:Dataset",
        "conformsTo": CONFORMS_TO,
        "name": f"improvcap-export-{scope}",
        "description": (
            f"{len(takes)} takes of recorded performances ({', '.join(sessions) or 'no sessions'}), "
            f"exported for the use {scope!r} by improvcap "
            f"{manifest['tool']['version']} as {manifest['output_format']}; clips: {streams.get('clip')}."
        ),
        "url": manifest["id"],
        "license": license_id,
        "citeAs": f"Studio recordings exported by improvcap for {scope!r}, {manifest['id']}",
        "version": "1.0.0",
        "datePublished": manifest["created_utc"][:10],
        "creator": {"@type": "sc:Organization", "name": "the recording studio"},
        "keywords": ["multimodal", "performance capture", "video", "audio", "motion capture", scope],
        "distribution": distribution,
        "rai:dataCollection": (
            "Performances recorded in a studio by improvcap: cameras, microphones and motion-capture hardware on "
            "one shared clock (per-frame timestamps; drift fitted per device). Every take was verified "
            "(file hashes, drops, clock drift, sync) before export."
        ),
        "rai:dataCollectionType": ["Direct measurement"],
        "rai:dataCollectionTimeFrame": [
            s for s in (starts[0] if starts else None, starts[-1] if starts else None) if s
        ],
        "rai:dataCollectionRawData": "Recorded media as captured (video copied, audio lossless).",
        "rai:personalSensitiveInformation": (
            f"Faces, bodies, voices and movements of {people} identifiable performer(s). Names are not in "
            "the export: each performer is an id with the sha256 of the consent form they signed "
            "(export.json holds their consent as ODRL policies)."
        ),
        "rai:dataUseCases": (
            f"Only {scope!r}: every performer in every included take allowed this use explicitly, judged "
            f"against the performers file on {manifest['created_utc'][:10]}. Any other use needs a new export "
            "judged for it."
        ),
        "rai:dataLimitations": (
            "Unscripted studio performances by a small group of performers: not a sample of any population."
        ),
        "rai:dataReleaseMaintenancePlan": (
            "Consent can be revoked: a revocation removes the performer's takes from every later export; "
            "holders of this export are asked to replace it with a later one."
        ),
    }
