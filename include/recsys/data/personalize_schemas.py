"""Amazon Personalize dataset schemas (Avro JSON) generated from the source schema and the CSV headers.

The columns are those the extraction writes (``writers.PERSONALIZE_*_HEADER``); a column's Avro type
follows the source table's column type, nullable columns are ``["null", <type>]``, string metadata is
``categorical`` (Personalize splits pipe-separated values such as genres), an item title ``textual``.
"""

from __future__ import annotations

import json

from sqlalchemy import Integer, String

from recsys.data import schema as source
from recsys.data import writers

NAMESPACE = "com.amazonaws.personalize.schema"
REQUIRED = {"USER_ID": "string", "ITEM_ID": "string", "TIMESTAMP": "long", "EVENT_TYPE": "string"}
TEXTUAL = {"TITLE"}


def _field(column) -> dict:
    avro = "int" if isinstance(column.type, Integer) else "string" if isinstance(column.type, String) else "float"
    field = {"name": column.name.upper(), "type": ["null", avro] if column.nullable else avro}
    if avro == "string":
        field["textual" if column.name.upper() in TEXTUAL else "categorical"] = True
    return field


def avro_schema(dataset: str) -> dict:
    """The Avro record schema of the ``interactions``, ``users`` or ``items`` dataset."""
    header = {
        "interactions": writers.PERSONALIZE_INTERACTIONS_HEADER,
        "users": writers.PERSONALIZE_USERS_HEADER,
        "items": writers.PERSONALIZE_ITEMS_HEADER,
    }[dataset]
    table = {"users": source.users, "items": source.items}.get(dataset)
    fields = []
    for name in header:
        if name in REQUIRED:
            fields.append({"name": name, "type": REQUIRED[name]})
        else:
            fields.append(_field(table.columns[name.lower()]))
    return {"type": "record", "name": dataset.capitalize(), "namespace": NAMESPACE, "fields": fields, "version": "1.0"}


def schema_json(dataset: str) -> str:
    return json.dumps(avro_schema(dataset), separators=(",", ":"))
