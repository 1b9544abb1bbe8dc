"""Places: a latitude and a longitude column, declared together as one entry, in that order
(``columns = {geo = [["lat", "lon"]]}``); never inferred, since two numbers do not say that
they are a place.

A tree cuts one axis at a time, so a region whose border runs diagonally takes it a staircase
of cuts: the coordinates rotated every 15 degrees (0: the coordinates themselves; a rotation by
90 more gives the same axes) let it cut along diagonals. The great-circle distance to the centre
of the rows the preprocessing is fit on gives every model the radial shape that prices and
densities around a city often have. A row missing either coordinate gets a missing indicator
(when the fit rows have such rows); its other features are missing, which the scaler fills.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.errors import DataError
from pipeline.tabular.roles.base import Role, as_numbers, check_reads, register

ANGLES = (0, 15, 30, 45, 60, 75)  # degrees
EARTH_KM = 6371.0  # the Earth's mean radius
LIMITS = (("latitude", 90.0), ("longitude", 180.0))


@register
class Geo(Role):
    name = "geo"
    takes = 2

    def check(self, column, cells, where: str) -> None:
        """Both columns numbers, a latitude within +-90 and a longitude within +-180 (swapped
        columns are the likely mistake)."""
        for member, member_cells, (what, limit) in zip(column.members, cells, LIMITS):
            check_reads(member, member_cells, where, "numbers")
            values = member.read(member_cells.present)
            outside = values[values.abs() > limit]
            if len(outside):
                raise DataError(f"{where}: column {member.name!r} holds {outside.iloc[0]:g}, which is no {what} "
                                f"(within +-{limit:g}); declare geo = [[latitude, longitude]], in that order")

    def read(self, values, column):
        return as_numbers(values)

    def fit(self, column, values: pd.DataFrame, **options) -> dict:
        """The centre of the rows (the mean of their points on the sphere), and whether any lacks
        a coordinate."""
        lat, lon = (np.radians(values[name].to_numpy()) for name in column.sources)
        both = ~(np.isnan(lat) | np.isnan(lon))
        lat, lon = lat[both], lon[both]
        x, y, z = (float(v.mean()) if len(v) else 0.0
                   for v in (np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)))
        return {"lat": float(np.degrees(np.arctan2(z, np.hypot(x, y)))), "lon": float(np.degrees(np.arctan2(y, x))),
                "missing": not both.all()}

    def names(self, column, fitted: dict) -> list[str]:
        rotated = [f"{column.name}.rot{angle}{axis}" for angle in ANGLES for axis in "ab"]
        return [*rotated, f"{column.name}.km", *([f"{column.name}.missing"] if fitted["missing"] else [])]

    def frames(self, column, fitted: dict, values: pd.DataFrame) -> tuple[dict, dict]:
        lat, lon = (values[name] for name in column.sources)
        numbers = {}
        for angle in ANGLES:
            cos, sin = np.cos(np.radians(angle)), np.sin(np.radians(angle))
            numbers[f"{column.name}.rot{angle}a"] = lat * cos + lon * sin
            numbers[f"{column.name}.rot{angle}b"] = -lat * sin + lon * cos
        numbers[f"{column.name}.km"] = kilometres(lat, lon, fitted["lat"], fitted["lon"])
        if fitted["missing"]:
            numbers[f"{column.name}.missing"] = (lat.isna() | lon.isna()).astype(np.float64)
        return numbers, {}


def kilometres(lat: pd.Series, lon: pd.Series, lat0: float, lon0: float) -> pd.Series:
    """The haversine distance from each point to (lat0, lon0), in km (NaN where a coordinate is)."""
    lat, lon, lat0, lon0 = np.radians(lat), np.radians(lon), np.radians(lat0), np.radians(lon0)
    a = np.sin((lat - lat0) / 2) ** 2 + np.cos(lat0) * np.cos(lat) * np.sin((lon - lon0) / 2) ** 2
    return 2 * EARTH_KM * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))
