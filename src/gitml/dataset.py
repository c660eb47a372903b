"""The dataset spec: every fact about the data that the stages, the API and the tests rely on.

Using your own data means editing this module and params.yaml, nothing else (docs: "Adapt your
dataset"; `make format` then drops the imports your spec no longer uses). The example is Capital
Bikeshare's hourly rentals of 2011 (ISLP's copy).
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
MONTHS = ("Jan", "Feb", "March", "April", "May", "June", "July", "Aug", "Sept", "Oct", "Nov",
          "Dec")  # fmt: skip

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

# Features the raw file holds otherwise than the API takes them, which `clean` converts: the raw
# column's spec (codes that `clean` maps to FEATURES' names, other units), or None for a feature
# the file lacks and `clean` derives (a weekday from a date). The raw file is checked with these,
# the clean table with FEATURES. Empty: the raw file holds every feature as the API takes it.
RAW_FEATURES: dict[str, Column | None] = {}

# The raw file's other columns (the target among them): validate checks them as FEATURES.
OTHER_COLUMNS: dict[str, Column] = {
    "season": Column("int", 1, 4),
    "mnth": Column("category", categories=MONTHS),
    "day": Column("int", 1, 366),
    "casual": Column("int", 0),
    "registered": Column("int", 0),
    TARGET: Column("int", 0),
}

# Checks across columns of the raw file.
CHECKS = [
    pa.Check(lambda df: df["casual"] + df["registered"] == df[TARGET],
             name="bikers == casual + registered"),
    pa.Check(lambda df: df["workingday"]
             == (df["weekday"].between(1, 5) & (df["holiday"] == 0)).astype(int),
             name="workingday == weekday in Mon..Fri and not holiday"),
]  # fmt: skip


def clean(raw: pd.DataFrame, params: dict[str, Any]) -> pd.DataFrame:
    """The validated raw table as the pipeline uses it, with TIME built and the quirks
    handled; `params` is params.yaml's `data` section. Keep the raw index: validate names
    CSV lines from it (raise BadRows to refuse rows).

    The example's quirks, handled here deliberately:
      * the table has no date, only the day of the year: TIME is rebuilt from `data.year`,
        and the month names (abbreviated inconsistently) and weekdays must agree with it;
      * humidity reads 0 % for a whole day (a sensor fault): set to missing, imputed later;
      * some hours are absent (e.g. storm days with few rentals): kept absent, never invented.
    """
    year = int(params["year"])
    timestamp = (
        pd.Timestamp(year=year, month=1, day=1)
        + pd.to_timedelta(raw["day"] - 1, unit="D")
        + pd.to_timedelta(raw["hr"], unit="h")
    )
    calendar = f"disagrees with the calendar of {year} (day of year + data.year)"
    month = raw["mnth"].map({name: number for number, name in enumerate(MONTHS, 1)})
    weekday = (timestamp.dt.dayofweek + 1) % 7
    for name, wrong in (
        ("mnth", timestamp.dt.month != month),
        ("weekday", weekday != raw["weekday"]),
    ):
        if wrong.any():
            raise BadRows(name, calendar, raw.index[wrong])
    return raw.drop(columns=["mnth", "day"]).assign(
        **{TIME: timestamp},
        hum=raw["hum"].mask(raw["hum"] == 0.0),
        weathersit=pd.Categorical(raw["weathersit"], categories=WEATHER),
    )
