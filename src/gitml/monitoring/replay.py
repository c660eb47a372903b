"""Production replay: the held-out stream, row by row, as real HTTP traffic to a server.

Each row of the `production` split (never trained on) is one POST /predict with
`X-Request-ID: replay-<its time>` and its event time in the row, so the server's prediction log
records it as traffic about that hour. The true target of each row is then delivered as actuals
(what a labelling job would deliver later), keyed by the same request id, for `make monitor`.
"""

import json
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import httpx
import pandas as pd
import typer

from gitml.config import SPLITS_DIR, split_path
from gitml.dataset import TARGET, TIME
from gitml.files import read_parquet
from gitml.schema import EVENT_TIME, as_model_input
from gitml.serving.guards import REQUEST_ID_HEADER
from gitml.serving.predlog import write_actuals


class ReplayError(RuntimeError):
    """The server could not take the replay; the message names the request."""


def requests_from(split: pd.DataFrame) -> list[tuple[str, dict[str, Any]]]:
    """(request id, row as a client sends it, with its event time) for each row, in time order."""
    ordered = split.sort_values(TIME)
    rows = json.loads(as_model_input(ordered).to_json(orient="records"))  # NaN -> null
    return [
        (f"replay-{ts:%Y-%m-%dT%H:%M}", {**row, EVENT_TIME: ts.isoformat()})
        for ts, row in zip(ordered[TIME], rows, strict=True)
    ]


def replay(
    url: str, requests: list[tuple[str, dict[str, Any]]], concurrency: int = 4
) -> list[float]:
    """POST each row; every answer must be a 200. Returns the predictions in request order."""
    with httpx.Client(base_url=url, timeout=30) as client:

        def send(request: tuple[str, dict[str, Any]]) -> float:
            request_id, row = request
            try:
                response = client.post(
                    "/predict",
                    json={"data": {"values": [row]}},
                    headers={REQUEST_ID_HEADER: request_id},
                )
            except httpx.HTTPError as err:
                raise ReplayError(f"{request_id}: no answer from {url} ({err})") from None
            if response.status_code != 200:
                raise ReplayError(f"{request_id}: {response.status_code} {response.text[:300]}")
            return float(response.json()[0])

        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            return list(pool.map(send, requests))


app = typer.Typer(add_completion=False)


@app.command()
def main(
    url: Annotated[str, typer.Option(help="The server (e.g. local staging).")],
    actuals: Annotated[Path, typer.Option(help="Directory the actuals are delivered to.")],
    split_name: Annotated[str, typer.Option("--split", help="Which split to replay.")] = (
        "production"
    ),
    splits_dir: Annotated[Path, typer.Option(help="Where the splits are.")] = SPLITS_DIR,
    limit: Annotated[int, typer.Option(help="Replay only the first N rows (0: all).")] = 0,
    concurrency: Annotated[int, typer.Option(help="Requests in flight.")] = 4,
) -> None:
    """Replay a split's rows against URL, then deliver their actuals."""
    split = read_parquet(split_path(split_name, splits_dir))
    if split.empty:
        typer.echo(
            f"replay: the {split_name} split is empty (split.production_from: null?)", err=True
        )
        raise typer.Exit(1)
    requests = requests_from(split)[: limit or None]
    started = datetime.now(UTC)
    try:
        replay(url, requests, concurrency)
    except ReplayError as err:
        typer.echo(f"replay: {err}", err=True)
        raise typer.Exit(1) from None
    seconds = (datetime.now(UTC) - started).total_seconds()
    truth = split.sort_values(TIME)[TARGET].to_numpy(dtype=float)[: len(requests)]
    delivered = actuals / f"{started:%Y-%m-%d}.jsonl"
    write_actuals(
        delivered, ((rid, 0, float(y)) for (rid, _), y in zip(requests, truth, strict=True))
    )
    typer.echo(
        f"replay: {len(requests)} rows of {split_name} sent to {url} in {seconds:.1f} s "
        f"({len(requests) / seconds:.0f} req/s); actuals in {delivered}"
    )


if __name__ == "__main__":
    app()
