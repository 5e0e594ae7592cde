"""The GDC clinical export (clinical.tsv) of a generated cohort.

Why a module of its own: the export's columns, its '--' missing marker and its one-row-per-treatment
layout are a file format like the omics files (:mod:`generators.omics_files`); the demo cohort
(:mod:`generators.demo`) only hands it the cases and its random stream.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

MISSING = "'--"  # GDC's marker for a missing clinical value
CLINICAL_COLUMNS = ("case_id", "case_submitter_id", "project_id", "age_at_index", "days_to_birth",
                    "ethnicity", "gender", "race", "vital_status", "days_to_death",
                    "days_to_last_follow_up", "ajcc_pathologic_stage", "primary_diagnosis",
                    "treatment_or_therapy", "treatment_type")


def clinical_export(rng: np.random.Generator, cases: pd.DataFrame, project: str) -> pd.DataFrame:
    """GDC clinical export rows for ``cases`` (``case_id``, ``case_submitter_id``, ``risk``, ``time``,
    ``event``): ~60 % of cases on two rows (radiation + pharmaceutical); the stage echoes ``risk``."""
    stages = np.array(["Stage I", "Stage IIA", "Stage IIB", "Stage IIIA", "Stage IIIC", "Stage IV"])
    rows = []
    for c in cases.itertuples():
        age = int(np.clip(rng.normal(60, 12), 28, 89))
        dead = bool(c.event)
        stage_score = c.risk + rng.normal(0, 1.0)
        stage = stages[int(np.clip(np.floor((stage_score + 2.5) * len(stages) / 5), 0, len(stages) - 1))]
        base = {
            "case_id": c.case_id, "case_submitter_id": c.case_submitter_id, "project_id": project,
            "age_at_index": age, "days_to_birth": -int(age * 365.25 + rng.integers(0, 365)),
            "ethnicity": rng.choice(["not hispanic or latino", "hispanic or latino", "not reported"],
                                    p=[0.8, 0.05, 0.15]),
            "gender": rng.choice(["female", "male"]),
            "race": rng.choice(["white", "black or african american", "asian", "not reported"],
                               p=[0.7, 0.15, 0.08, 0.07]),
            "vital_status": "Dead" if dead else "Alive",
            "days_to_death": c.time if dead else MISSING,
            "days_to_last_follow_up": (MISSING if rng.random() < 0.5 else int(rng.integers(0, c.time + 1)))
            if dead else c.time,
            "ajcc_pathologic_stage": MISSING if rng.random() < 0.05 else stage,
            "primary_diagnosis": rng.choice(["Adenocarcinoma, NOS", "Infiltrating duct carcinoma, NOS"]),
        }
        if rng.random() < 0.6:
            for t in ("Radiation Therapy, NOS", "Pharmaceutical Therapy, NOS"):
                rows.append(base | {"treatment_or_therapy": rng.choice(["yes", "no"]), "treatment_type": t})
        else:
            rows.append(base | {"treatment_or_therapy": MISSING, "treatment_type": MISSING})
    return pd.DataFrame(rows, columns=list(CLINICAL_COLUMNS))
