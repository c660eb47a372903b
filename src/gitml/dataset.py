"""The dataset spec: every fact about the data that the stages, the API and the tests rely on.

Using your own data means editing this module and params.yaml, nothing else (README: "Adapt it
to your dataset"). The example is Capital Bikeshare's hourly rentals of 2011 (ISLP's copy).
"""

from typing import Any

import pandas as pd
import pandera.pandas as pa

from gitml.columns import BadRows, Column

RAW_FILE = "bikeshare.csv"  # in data/ (tracked by data.dvc)
TIME = "timestamp"  # the clean table's time column, which `clean` builds
KEY = (TIME,)  # what makes a row unique: duplicates are refused
TARGET = "bikers"
LEAKY = ("casual", "registered")  # parts of the target: never features
ERRORS_BY = "hr"  # evaluate's error plot: the mean absolute error by this column

WEATHER = ("clear", "cloudy/misty", "light rain/snow", "heavy rain/snow")

# The model's input contract: the API, batch prediction and monitoring are built from it.
FEATURES: dict[str, Column] = {
    "hr": Column("int", 0, 23, example=8),
    "weekday": Column("int", 0, 6, example=2),
    "weathersit": Column("category", categories=WEATHER, example="clear"),
    "workingday": Column("int", 0, 1, example=1),
    "holiday": Column("int", 0, 1, example=0),
    "temp": Column("float", 0.0, 1.0, example=0.5),
    "atemp": Column("float", 0.0, 1.0, example=0.48),
    "hum": Column("float", 0.0, 1.0, nullable=True, example=0.6),
    "windspeed": Column("float", 0.0, 1.0, example=0.2),
}

MONTHS = {
    "Jan": 1, "Feb": 2, "March": 3, "April": 4, "May": 5, "June": 6,
    "July": 7, "Aug": 8, "Sept": 9, "Oct": 10, "Nov": 11, "Dec": 12,
}  # fmt: skip
UNIT_INTERVAL = pa.Check.in_range(0.0, 1.0)

# The raw file as it comes (validate stage): every column, its type and range.
RAW_SCHEMA = pa.DataFrameSchema(
    {
        "season": pa.Column(int, pa.Check.isin([1, 2, 3, 4])),
        "mnth": pa.Column(str, pa.Check.isin(list(MONTHS))),
        "day": pa.Column(int, pa.Check.in_range(1, 366)),
        "hr": pa.Column(int, pa.Check.in_range(0, 23)),
        "holiday": pa.Column(int, pa.Check.isin([0, 1])),
        "weekday": pa.Column(int, pa.Check.in_range(0, 6)),
        "workingday": pa.Column(int, pa.Check.isin([0, 1])),
        "weathersit": pa.Column(str, pa.Check.isin(WEATHER)),
        "temp": pa.Column(float, UNIT_INTERVAL),
        "atemp": pa.Column(float, UNIT_INTERVAL),
        "hum": pa.Column(float, UNIT_INTERVAL),
        "windspeed": pa.Column(float, UNIT_INTERVAL),
        "casual": pa.Column(int, pa.Check.ge(0)),
        "registered": pa.Column(int, pa.Check.ge(0)),
        "bikers": pa.Column(int, pa.Check.ge(0)),
    },
    checks=[
        pa.Check(
            lambda df: df["casual"] + df["registered"] == df["bikers"],
            name="bikers == casual + registered",
        ),
        pa.Check(
            lambda df: (
                df["workingday"]
                == (df["weekday"].between(1, 5) & (df["holiday"] == 0)).astype(int)
            ),
            name="workingday == weekday in Mon..Fri and not holiday",
        ),
    ],
    strict=True,
    coerce=False,
)


def clean(raw: pd.DataFrame, params: dict[str, Any]) -> pd.DataFrame:
    """The validated raw table as the pipeline uses it, with TIME built and the quirks
    handled; `params` is params.yaml's `data` section. Keep the raw index: validate names
    CSV lines from it (and raises BadRows naming them).

    The example's quirks, handled here deliberately:
      * month names are abbreviated inconsistently ("Jan", "March", "Sept"): mapped to 1..12;
      * the table has no date, only the day of the year: TIME is rebuilt from `data.year`;
      * humidity reads 0 % for a whole day (a sensor fault): set to missing, imputed later;
      * some hours are absent (e.g. storm days with few rentals): kept absent, never invented.
    """
    year = int(params["year"])
    timestamp = (
        pd.Timestamp(year=year, month=1, day=1)
        + pd.to_timedelta(raw["day"] - 1, unit="D")
        + pd.to_timedelta(raw["hr"], unit="h")
    )
    month = raw["mnth"].map(MONTHS)
    disagree = {
        "mnth": raw.index[timestamp.dt.month != month],
        "weekday": raw.index[(timestamp.dt.dayofweek + 1) % 7 != raw["weekday"]],
    }
    for name, rows in disagree.items():
        if len(rows):
            raise BadRows(name, f"disagrees with the calendar of {year} (day of year + data.year)",
                          rows)  # fmt: skip
    return raw.drop(columns=["mnth", "day"]).assign(
        **{TIME: timestamp},
        hum=raw["hum"].mask(raw["hum"] == 0.0),
        weathersit=pd.Categorical(raw["weathersit"], categories=WEATHER),
    )
