"""Tabular competitions: CSVs -> features -> members (torch, scikit-learn) -> CV, blend, submission."""
