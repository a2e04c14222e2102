"""The numbers the CAN paper reports, as data, for side-by-side tables.

Every value is copied from ``paper/can-reid-paper.md`` (Li et al., "Collaborative Attention
Network for Person Re-identification"), percent, Market-1501 unless the table says
otherwise, without re-ranking. ``None`` marks a cell the paper leaves empty ("-").
Row names match the keys of :mod:`canlib.repro.experiments` so measured rows line up.

Two oddities are worth knowing when reading them side by side:

* Table 3's "part-1,3,5,7 with CA" row equals Table 4's "CAN + CE + Triplet" row, so
  Tables 2 and 3 were evidently trained with cross-entropy plus triplet loss on the
  global features only (``experiments.TABLE2``/``TABLE3`` do the same).
* Table 4's best CAN reaches 89.6 mAP / 95.7 rank-1, yet Table 5 reports 90.6 / 96.4 for
  CAN on Market-1501 with no stated change of recipe.
"""

from __future__ import annotations

from canlib.errors import ConfigError

TABLE2_COLUMNS = ("mAP", "rank1", "rank3", "rank5")
TABLE2 = {
    "part-1,2,3": (86.6, 94.4, 97.2, 97.9),
    "part-1,2,3,4": (86.4, 94.4, 97.2, 98.0),
    "part-1,3,5": (86.1, 94.6, 97.5, 98.1),
    "part-1,3,5,7": (85.4, 94.3, 97.2, 98.0),
    "part-1,3,5,7,9": (83.9, 93.9, 96.9, 97.9),
}

TABLE3_COLUMNS = ("mAP", "rank1", "rank3", "rank5", "rank10")
TABLE3 = {
    "part-1,2,3 with CA": (87.4, 94.8, 97.6, 98.4, 99.1),
    "part-1,2,3,4 with CA": (86.7, 94.5, 97.5, 98.3, 99.1),
    "part-1,3,5 with CA": (87.6, 95.0, 97.8, 98.4, 99.2),
    "part-1,3,5,7 with CA": (87.9, 95.2, 97.5, 98.3, 99.2),
    "part-1,3,5,7,9 with CA": (87.2, 94.8, 97.4, 98.2, 98.9),
    "part-1,3,5,7 w/o CA": (85.4, 94.3, 97.2, 98.0, 98.8),
}

TABLE4_COLUMNS = ("mAP", "rank1", "rank3", "rank5")
TABLE4 = {
    "CAN + CE": (87.0, 95.0, 97.8, 98.7),
    "CAN + CE + Triplet": (87.9, 95.2, 97.5, 98.3),
    "CAN + CE + Triplet + Center": (88.3, 95.4, 97.6, 98.4),
    "global & local to L_c": (89.6, 95.7, 97.8, 98.6),
}

TABLE5_COLUMNS = ("mAP", "rank1", "rank5", "rank10")
TABLE5 = {
    "Spindle": (None, 76.9, 91.5, 94.6),
    "SVDNet": (62.1, 82.3, 92.3, 95.2),
    "PDC": (63.4, 84.1, 92.7, 94.9),
    "PSE": (69.0, 87.7, 94.5, 96.8),
    "Cam-style": (71.6, 89.5, None, None),
    "GLAD": (73.9, 89.9, None, None),
    "HA-CNN": (75.7, 91.2, None, None),
    "CNN-Base": (79.8, 92.5, None, None),
    "PCB+RPP": (81.6, 93.8, 97.5, 98.5),
    "HPM": (82.7, 94.2, 97.5, 98.5),
    "SGGNN": (82.8, 92.3, 96.1, 97.4),
    "SPReID": (83.4, 93.7, 97.6, 98.4),
    "MHN": (85.0, 95.1, 98.1, 98.9),
    "DG-Net": (86.0, 94.8, None, None),
    "MGN": (86.9, 95.7, None, None),
    "DSA-ReID": (87.6, 95.7, None, None),
    "Pyramid": (88.2, 95.7, 98.4, 99.0),
    "CAN": (90.6, 96.4, 98.8, 99.3),
}

# Table 6: (DukeMTMC-reID mAP, rank1, CUHK03 mAP, rank1). The paper's CUHK03 setting pools
# labeled and detected boxes ("all testing images are used without splitting").
TABLE6_COLUMNS = ("duke_mAP", "duke_rank1", "cuhk03_mAP", "cuhk03_rank1")
TABLE6 = {
    "CNN-Base": (68.5, 83.5, 59.0, 63.5),
    "PSE+ECN": (62.0, 79.8, 30.2, 27.3),
    "Cam-style": (57.6, 78.3, None, None),
    "GLAD": (None, None, None, 85.0),
    "HA-CNN": (63.8, 80.5, 41.0, 44.4),
    "PCB+RPP": (69.2, 83.3, 57.5, 63.7),
    "HPM": (74.3, 86.6, 63.9, 57.2),
    "MHN": (77.2, 89.1, 65.4, 77.2),
    "DG-Net": (74.8, 86.6, None, None),
    "MGN": (78.4, 88.7, 67.4, 68.0),
    "DSA-ReID": (74.3, 86.2, 75.2, 78.9),
    "Pyramid": (79.0, 89.0, 76.9, 78.9),
    "CAN": (82.3, 91.6, 82.8, 86.1),
}

TABLES = {
    "table2": (TABLE2_COLUMNS, TABLE2),
    "table3": (TABLE3_COLUMNS, TABLE3),
    "table4": (TABLE4_COLUMNS, TABLE4),
    "table5": (TABLE5_COLUMNS, TABLE5),
    "table6": (TABLE6_COLUMNS, TABLE6),
}


def paper_rows(table: str) -> list[dict[str, float | None]]:
    """The rows of one of the paper's tables as dicts ``{"row": name, column: value}``."""
    if table not in TABLES:
        raise ConfigError(f"unknown paper table {table!r}; choose one of {', '.join(TABLES)}")
    columns, rows = TABLES[table]
    return [{"row": name, **dict(zip(columns, values))} for name, values in rows.items()]
