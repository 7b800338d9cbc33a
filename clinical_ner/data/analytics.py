"""The validation team's named queries, written once for Athena (Trino) and DuckDB.

The CDK analytics stack turns each `NamedQuery` into an ``AWS::Athena::NamedQuery`` in the
stage's Glue database; `run_local` runs the very same SQL text in DuckDB over a local output
directory (``entities/``, ``notes/``, ``quarantine/`` with ``dt=YYYY-MM-DD`` Hive partitions,
as written by `data.extraction.run_extraction` / `data.publish`), so a query is
known to work before it is deployed.

The SQL sticks to the common subset of both engines: unqualified table names (the named query
carries its database; DuckDB gets views of the same names), ``?`` positional parameters
(Athena execution parameters / DuckDB prepared statements), CASE instead of FILTER/IF, CAST to
DOUBLE, window functions, ``NULLS FIRST`` ordering, no engine-specific functions. ``dt`` is a
string in both (Athena partition projection of type date is exposed as a string column; DuckDB
reads the partition with autocasting switched off).

Re-runs: a note extracted again by another model version has rows per version. Queries that
describe "the current state of a note" keep the latest inference per note (``latest`` CTE);
the model-version comparison keeps all versions on purpose.

Labels: no query names a label. The label set is whatever the models wrote (each model's own,
from its metadata), so per-label figures are rows (``GROUP BY label``) and label pairs are
``label_a < label_b`` combinations, never fixed columns: a model with a new label (e.g.
SYMPTOM) shows up without a query change.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TABLE_NAMES = ("entities", "notes", "quarantine")
REVIEW_LIMIT = 200
PAIR_LIMIT = 100


@dataclass(frozen=True)
class NamedQuery:
    name: str  # Athena named-query name (unique per database) and local key
    description: str
    sql: str
    parameters: tuple[str, ...] = ()  # names of the ``?`` parameters, in order


_LATEST_NOTES = """
WITH latest AS (
    SELECT note_id, model_version, inference_time, entity_count, mean_confidence, dt,
           ROW_NUMBER() OVER (PARTITION BY note_id ORDER BY inference_time DESC,
                              model_version DESC) AS rn
    FROM notes
)"""

QUERIES: tuple[NamedQuery, ...] = (
    NamedQuery(
        "note_extractions",
        "All extracted mentions of one note, every label (parameter: note_id), in text "
        "order, every model version that processed it.",
        """
SELECT note_id, entity_id, label, text, start_char, end_char, confidence, negated,
       historical, hypothetical, family, uncertain, section, icd10cm_code,
       icd10cm_description, drug_name, strength, dosage, route_or_mode, frequency,
       model_version, inference_time, dt
FROM entities
WHERE note_id = ?
ORDER BY model_version, start_char, end_char, label
""".strip(),
        ("note_id",),
    ),
    NamedQuery(
        "review_queue",
        "Notes waiting for review, least certain first: the latest extraction of each note, "
        "ordered by its lowest entity confidence; notes with no entity come first.",
        (
            _LATEST_NOTES
            + f"""
SELECT l.note_id, l.model_version, l.dt, l.entity_count,
       MIN(e.confidence) AS min_confidence,
       l.mean_confidence,
       SUM(CASE WHEN e.confidence < 0.5 THEN 1 ELSE 0 END) AS low_confidence_entities
FROM latest l
LEFT JOIN entities e
  ON e.note_id = l.note_id AND e.model_version = l.model_version
 AND e.inference_time = l.inference_time
WHERE l.rn = 1
GROUP BY l.note_id, l.model_version, l.dt, l.entity_count, l.mean_confidence
ORDER BY min_confidence ASC NULLS FIRST, l.note_id
LIMIT {REVIEW_LIMIT}
"""
        ).strip(),
    ),
    NamedQuery(
        "label_counts_by_day",
        "Mentions per day (run date) and label, for every label the models produced: "
        "mentions, negated mentions, notes mentioning the label, mean confidence.",
        """
SELECT dt, label,
       COUNT(*) AS mentions,
       SUM(CASE WHEN negated THEN 1 ELSE 0 END) AS negated_mentions,
       COUNT(DISTINCT note_id) AS notes,
       AVG(CAST(confidence AS DOUBLE)) AS mean_confidence
FROM entities
GROUP BY dt, label
ORDER BY dt, label
""".strip(),
    ),
    NamedQuery(
        "label_pairs",
        "Mentions of two different labels that occur in the same note (not negated), e.g. "
        "DISEASE with TREATMENT, for every pair of labels (label_a < label_b): the "
        f"{PAIR_LIMIT} most frequent text pairs per label pair, by the number of notes they "
        "co-occur in; text lower-cased.",
        f"""
WITH pairs AS (
    SELECT a.label AS label_a, LOWER(a.text) AS text_a,
           b.label AS label_b, LOWER(b.text) AS text_b,
           COUNT(DISTINCT a.note_id) AS notes,
           MIN(a.dt) AS first_seen, MAX(a.dt) AS last_seen
    FROM entities a
    JOIN entities b
      ON b.note_id = a.note_id AND b.model_version = a.model_version
     AND b.inference_time = a.inference_time
    WHERE a.label < b.label
      AND NOT a.negated AND NOT b.negated
    GROUP BY a.label, LOWER(a.text), b.label, LOWER(b.text)
),
ranked AS (
    SELECT label_a, text_a, label_b, text_b, notes, first_seen, last_seen,
           ROW_NUMBER() OVER (PARTITION BY label_a, label_b
                              ORDER BY notes DESC, text_a, text_b) AS rank_in_pair
    FROM pairs
)
SELECT label_a, text_a, label_b, text_b, notes, first_seen, last_seen
FROM ranked
WHERE rank_in_pair <= {PAIR_LIMIT}
ORDER BY label_a, label_b, notes DESC, text_a, text_b
""".strip(),
    ),
    NamedQuery(
        "diagnoses_by_icd10cm_chapter_by_day",
        "Coded mentions the patient has (latest extraction of each note; not negated, not "
        "hypothetical, not a family member's) per day, label and ICD-10-CM chapter of the top "
        "code: mentions, notes, distinct codes, historical and uncertain mentions.",
        (
            _LATEST_NOTES
            + """
SELECT e.dt, e.label, e.icd10cm_chapter,
       COUNT(*) AS mentions,
       COUNT(DISTINCT e.note_id) AS notes,
       COUNT(DISTINCT e.icd10cm_code) AS distinct_codes,
       SUM(CASE WHEN e.historical THEN 1 ELSE 0 END) AS historical_mentions,
       SUM(CASE WHEN e.uncertain THEN 1 ELSE 0 END) AS uncertain_mentions
FROM entities e
JOIN latest l
  ON l.note_id = e.note_id AND l.model_version = e.model_version
 AND l.inference_time = e.inference_time AND l.rn = 1
WHERE e.icd10cm_code IS NOT NULL
  AND NOT e.negated AND NOT e.hypothetical AND NOT e.family
GROUP BY e.dt, e.label, e.icd10cm_chapter
ORDER BY e.dt, e.label, mentions DESC, e.icd10cm_chapter
"""
        ).strip(),
    ),
    NamedQuery(
        "medications_with_dose_per_note",
        "Medications of each note as the data-entry team types them (latest extraction; not "
        "negated): mention, normalised drug and its ids, strength, dosage, route, frequency, "
        "duration, form, rate; mentions that are a known drug or carry an attribute.",
        (
            _LATEST_NOTES
            + """
SELECT e.note_id, e.start_char, e.text, e.drug_name, e.drug_mesh_id, e.drug_drugbank_id,
       e.drug_nhs_url,
       e.strength, e.dosage, e.route_or_mode, e.frequency, e.duration, e.form, e.rate,
       e.section, e.historical, e.confidence, e.model_version, e.dt
FROM entities e
JOIN latest l
  ON l.note_id = e.note_id AND l.model_version = e.model_version
 AND l.inference_time = e.inference_time AND l.rn = 1
WHERE NOT e.negated
  AND (e.drug_name IS NOT NULL
       OR COALESCE(e.strength, e.dosage, e.route_or_mode, e.frequency, e.duration, e.form,
                   e.rate) IS NOT NULL)
ORDER BY e.note_id, e.start_char, e.end_char
"""
        ).strip(),
    ),
    NamedQuery(
        "quarantine_reasons_by_day",
        "Rejected records per day and reason code, with the number of source objects they "
        "came from.",
        """
SELECT dt, reason,
       COUNT(*) AS records,
       COUNT(DISTINCT source) AS sources
FROM quarantine
GROUP BY dt, reason
ORDER BY dt, records DESC, reason
""".strip(),
    ),
    NamedQuery(
        "model_version_comparison",
        "Per model version: notes and entities processed, entities per note, share of notes "
        "with no entity, mean and low (<0.5) confidence share, negations (per-label figures: "
        "labels_by_model_version).",
        """
WITH n AS (
    SELECT model_version,
           COUNT(*) AS notes,
           SUM(CASE WHEN entity_count = 0 THEN 1 ELSE 0 END) AS notes_without_entity,
           MIN(dt) AS first_dt, MAX(dt) AS last_dt
    FROM notes
    GROUP BY model_version
),
e AS (
    SELECT model_version,
           COUNT(*) AS entities,
           AVG(CAST(confidence AS DOUBLE)) AS mean_confidence,
           AVG(CASE WHEN confidence < 0.5 THEN 1.0 ELSE 0.0 END) AS low_confidence_share,
           AVG(CASE WHEN negated THEN 1.0 ELSE 0.0 END) AS negated_share
    FROM entities
    GROUP BY model_version
)
SELECT n.model_version, n.notes, COALESCE(e.entities, 0) AS entities,
       CAST(COALESCE(e.entities, 0) AS DOUBLE) / n.notes AS entities_per_note,
       CAST(n.notes_without_entity AS DOUBLE) / n.notes AS no_entity_share,
       e.mean_confidence, e.low_confidence_share, e.negated_share,
       n.first_dt, n.last_dt
FROM n
LEFT JOIN e ON e.model_version = n.model_version
ORDER BY n.first_dt, n.model_version
""".strip(),
    ),
    NamedQuery(
        "labels_by_model_version",
        "Per model version and label (one row each, whatever labels the models have): "
        "mentions, share of the version's mentions, mentions per 1000 words, notes "
        "mentioning the label, mean confidence, negated share.",
        """
WITH n AS (
    SELECT model_version, SUM(word_count) AS words
    FROM notes
    GROUP BY model_version
),
e AS (
    SELECT model_version, label,
           COUNT(*) AS mentions,
           COUNT(DISTINCT note_id) AS notes,
           AVG(CAST(confidence AS DOUBLE)) AS mean_confidence,
           AVG(CASE WHEN negated THEN 1.0 ELSE 0.0 END) AS negated_share
    FROM entities
    GROUP BY model_version, label
)
SELECT e.model_version, e.label, e.mentions,
       CAST(e.mentions AS DOUBLE)
           / SUM(e.mentions) OVER (PARTITION BY e.model_version) AS share_of_mentions,
       CASE WHEN n.words > 0 THEN CAST(e.mentions AS DOUBLE) * 1000 / n.words END
           AS mentions_per_1000_words,
       e.notes, e.mean_confidence, e.negated_share
FROM e
LEFT JOIN n ON n.model_version = e.model_version
ORDER BY e.model_version, e.label
""".strip(),
    ),
)

# The review loop's KPIs (docs/review.md) over the `reviews` table; kept apart from QUERIES
# (their table is the review loop's), deployed beside them by the analytics stack.
REVIEW_TABLE = "reviews"
_MODEL_DECISIONS = "'accepted', 'rejected', 'relabelled', 'span_fixed'"
REVIEW_QUERIES: tuple[NamedQuery, ...] = (
    NamedQuery(
        "review_kpis_by_day",
        "The workbench's business KPIs per review day and model version: notes reviewed, "
        "production precision (accepted / model entities), production recall (model entities "
        "kept / final entities; _exact: accepted only), corrections per 100 model entities, "
        "median review seconds per note, hours saved = notes x manual-entry minutes (the "
        "parameter, a stage setting) / 60 - review hours.",
        f"""
WITH notes AS (
    SELECT dt, model_version, seconds_spent,
           ROW_NUMBER() OVER (PARTITION BY dt, model_version ORDER BY seconds_spent) AS rn,
           COUNT(*) OVER (PARTITION BY dt, model_version) AS n
    FROM reviews
    WHERE decision = 'note_reviewed'
),
medians AS (
    SELECT dt, model_version, AVG(seconds_spent) AS median_review_seconds
    FROM notes
    WHERE 2 * rn BETWEEN n AND n + 2
    GROUP BY dt, model_version
),
counts AS (
    SELECT dt, model_version,
           SUM(CASE WHEN decision = 'note_reviewed' THEN 1 ELSE 0 END) AS notes_reviewed,
           SUM(CASE WHEN decision IN ({_MODEL_DECISIONS}) THEN 1 ELSE 0 END) AS model_entities,
           SUM(CASE WHEN decision = 'accepted' THEN 1 ELSE 0 END) AS accepted,
           SUM(CASE WHEN decision IN ('accepted', 'relabelled', 'span_fixed') THEN 1 ELSE 0 END)
               AS kept,
           SUM(CASE WHEN decision IN ('accepted', 'relabelled', 'span_fixed', 'added')
                    THEN 1 ELSE 0 END) AS final_entities,
           SUM(CASE WHEN decision IN ('rejected', 'relabelled', 'span_fixed', 'added')
                    THEN 1 ELSE 0 END) AS corrections,
           SUM(CASE WHEN decision = 'note_reviewed' THEN seconds_spent ELSE 0 END)
               AS review_seconds
    FROM reviews
    GROUP BY dt, model_version
)
SELECT c.dt, c.model_version, c.notes_reviewed, c.model_entities, c.final_entities, c.accepted,
       CASE WHEN c.model_entities > 0
            THEN CAST(c.accepted AS DOUBLE) / c.model_entities END AS production_precision,
       CASE WHEN c.final_entities > 0
            THEN CAST(c.kept AS DOUBLE) / c.final_entities END AS production_recall,
       CASE WHEN c.final_entities > 0
            THEN CAST(c.accepted AS DOUBLE) / c.final_entities END AS production_recall_exact,
       CASE WHEN c.model_entities > 0
            THEN CAST(c.corrections AS DOUBLE) * 100 / c.model_entities END
           AS corrections_per_100_entities,
       m.median_review_seconds,
       CAST(c.review_seconds AS DOUBLE) / 3600 AS review_hours,
       c.notes_reviewed * CAST(? AS DOUBLE) / 60 - CAST(c.review_seconds AS DOUBLE) / 3600
           AS hours_saved
FROM counts c
LEFT JOIN medians m ON m.dt = c.dt AND m.model_version = c.model_version
ORDER BY c.dt, c.model_version
""".strip(),
        ("manual_entry_minutes_per_note",),
    ),
)
QUERY_BY_NAME = {q.name: q for q in (*QUERIES, *REVIEW_QUERIES)}


# --------------------------------------------------------------------------- DuckDB


def connect_local(output_dir: Path | str) -> Any:
    """An in-memory DuckDB connection with views entities/notes/quarantine over `output_dir`."""
    import duckdb

    root = Path(output_dir)
    con = duckdb.connect(":memory:")
    for table in TABLE_NAMES:
        pattern = root / table / "dt=*" / "part-*.parquet"
        if not list((root / table).glob("dt=*/part-*.parquet")):
            raise FileNotFoundError(f"no Parquet files for table {table!r} under {root / table}")
        # hive_types_autocast=false keeps dt a VARCHAR, as in Athena.
        con.execute(
            f"CREATE VIEW {table} AS SELECT * FROM read_parquet("
            f"'{_sql_literal(pattern.as_posix())}', hive_partitioning = true, "
            "hive_types_autocast = false, union_by_name = true)"
        )
    return con


def connect_reviews(lake_root: Path | str) -> Any:
    """An in-memory DuckDB connection with a `reviews` view over ``<lake_root>/reviews/``."""
    import duckdb

    root = Path(lake_root) / REVIEW_TABLE
    if not list(root.glob("dt=*/part-*.parquet")):
        raise FileNotFoundError(f"no Parquet files for table {REVIEW_TABLE!r} under {root}")
    con = duckdb.connect(":memory:")
    pattern = (root / "dt=*" / "part-*.parquet").as_posix()
    con.execute(
        f"CREATE VIEW {REVIEW_TABLE} AS SELECT * FROM read_parquet('{_sql_literal(pattern)}', "
        "hive_partitioning = true, hive_types_autocast = false, union_by_name = true)"
    )
    return con


def _sql_literal(text: str) -> str:
    return text.replace("'", "''")


def run_query(
    con: Any, query: NamedQuery | str, params: Mapping[str, Any] | Sequence[Any] | None = None
) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Run a named query (object or name) on a DuckDB connection: (column names, rows)."""
    q = QUERY_BY_NAME[query] if isinstance(query, str) else query
    if isinstance(params, Mapping):
        missing = [p for p in q.parameters if p not in params]
        if missing:
            raise ValueError(f"query {q.name} needs parameter(s) {missing}")
        values = [params[p] for p in q.parameters]
    else:
        values = list(params or [])
    if len(values) != len(q.parameters):
        raise ValueError(f"query {q.name} takes {len(q.parameters)} parameter(s)")
    cur = con.execute(q.sql, values) if values else con.execute(q.sql)
    columns = [d[0] for d in cur.description]
    return columns, cur.fetchall()


def run_local(
    output_dir: Path | str, params: Mapping[str, Mapping[str, Any]] | None = None
) -> dict[str, tuple[list[str], list[tuple[Any, ...]]]]:
    """Every named query over a local output directory; `params` per query name."""
    con = connect_local(output_dir)
    try:
        return {q.name: run_query(con, q, (params or {}).get(q.name)) for q in QUERIES}
    finally:
        con.close()
