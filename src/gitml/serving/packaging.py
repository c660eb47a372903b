"""package stage, and the one module that talks to MLEM.

MLEM is archived upstream (0.4.14 is its last release) and pins old pydantic/FastAPI/typer/
isort; keeping every MLEM call here means replacing it later touches one file.
`python -m gitml package` saves the trained pipeline with sample data, so the `.mlem`
metadata records the input schema (columns and dtypes) the server decodes requests with.
"""

import functools
import json
import math
import shutil
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, ClassVar

import joblib
import mlem.utils.module
import numpy as np
import pandas as pd
import typer
import yaml
from fastapi import FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from mlem.api import load_meta, save
from mlem.contrib.fastapi import FastAPIServer
from mlem.contrib.pandas import DataFrameType
from mlem.runtime.interface import ModelInterface
from mlem.runtime.server import ServerInterface
from pydantic import BaseConfig, BaseModel
from pydantic.error_wrappers import ErrorWrapper
from pydantic.errors import MissingError
from pydantic.fields import ModelField
from starlette.routing import Route

from gitml.config import GOLDEN_FILE, MLEM_MODEL, MODEL_FILE, SPLITS_DIR, split_path
from gitml.files import read_parquet, write_json
from gitml.schema import EXAMPLE_ROW, FEATURES, as_model_input
from gitml.serving.batching import Batcher
from gitml.serving.compiled import Columns, Predictor, compile_verified
from gitml.serving.golden import golden_cases, golden_rows
from gitml.serving.jsonlog import say

# MLEM asks importlib_metadata which distribution provides each of a model's modules by listing
# every installed file of every distribution (~1 s on the 2-core machine), twice per load or
# save. What is installed does not change while a process runs: asked once per process, a
# server starts a second sooner.
mlem.utils.module.packages_distributions = functools.cache(
    mlem.utils.module.packages_distributions
)

SAMPLE_ROWS = 50
# Requests of up to this many rows are predicted by the compiled predictor on the event loop
# (~0.2 ms for one row, ~1 ms for 8 on a quiet core); larger ones go to a thread, so that one
# request of many rows never holds up the others' input and output.
INLINE_ROWS = 8
UNPARSED = "There was an error parsing the body"  # FastAPI's 400 for a body JSON cannot read
RequestModels = dict[str, type[BaseModel]]
# Called after each successful predict with (the request, rows as sent (event time included),
# predictions).
PredictHook = Callable[[Request, list[dict[str, Any]], list[float]], None]


def save_model(model: Any, sample: pd.DataFrame, path: Path) -> None:
    """Save with MLEM into `path` (+ `path.mlem`), atomically: a failure leaves nothing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".mlem-", dir=path.parent))
    try:
        save(model, str(scratch / path.name), sample_data=sample)
        for produced in scratch.iterdir():
            produced.replace(path.parent / produced.name)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def load_model(path: Path) -> Any:
    """The saved model object itself (here the scikit-learn Pipeline)."""
    return load_meta(str(path), load_value=True).get_value()


def model_hash(path: Path) -> str:
    """The md5 MLEM records for the model artifact: a version id that changes with the model."""
    meta = yaml.safe_load(Path(f"{path}.mlem").read_text())
    return str(meta["artifacts"]["data"]["hash"])


def column_decoder(data_type: Any) -> Callable[[list[dict[str, Any]]], Columns] | None:
    """Validated rows -> the columns of the DataFrame MLEM's serializer would make (its
    recorded columns, in order, with their dtypes), or None for a data type whose decoding only
    MLEM knows (an index, a pandas extension dtype)."""
    if not isinstance(data_type, DataFrameType) or data_type.index_cols:
        return None
    dtypes = data_type.actual_dtypes
    if not all(isinstance(dtype, np.dtype) for dtype in dtypes):
        return None
    columns = list(zip(data_type.columns, dtypes, strict=True))

    def decode(rows: list[dict[str, Any]]) -> dict[str, np.ndarray]:
        # np.array casts as astype would: None -> NaN in a float column, a TypeError (a 500,
        # as MLEM's cast gives) in an integer one, which the request model never lets through
        return {
            name: np.array([row[name] for row in rows], dtype=dtype) for name, dtype in columns
        }

    return decode


def frame_decoder(
    data_type: Any, fallback: Callable[[dict[str, Any]], Any]
) -> Callable[[list[dict[str, Any]]], Any]:
    """Validated rows -> the DataFrame MLEM's serializer would make, built column by column:
    MLEM goes through `DataFrame.from_records`, a column reorder and a cast per column: 4.0 ms
    for one row against 0.6 ms this way (2 loaded cores). A data type `column_decoder` does not
    know keeps MLEM's own `fallback`.
    """
    columns = column_decoder(data_type)
    if columns is None:
        return lambda rows: fallback({"values": rows})
    return lambda rows: pd.DataFrame(columns(rows))


def fast_predictor(model: Any, path: Path) -> tuple[Predictor | None, str]:
    """The compiled form of the loaded model (gitml.serving.compiled), checked against its own
    predict on the example row and the golden rows beside it, and again with every value a
    client may leave out missing; None (the model's own predict serves) where it cannot be
    compiled or disagrees. And a line saying which serves."""
    golden = path.parent / GOLDEN_FILE
    rows = json.loads(golden.read_text())["rows"] if golden.is_file() else []
    frame = as_model_input(pd.DataFrame([EXAMPLE_ROW, *rows])[list(FEATURES)])
    optional = [name for name, spec in FEATURES.items() if spec.nullable and spec.kind == "float"]
    if optional:
        missing = frame.assign(**dict.fromkeys(optional, np.nan))
        frame = pd.concat([frame, missing], ignore_index=True)
    return compile_verified(model, frame)


class StrictFastAPIServer(FastAPIServer):
    """MLEM's FastAPI server with our own request model for `predict`.

    MLEM still loads the model, gives the input schema (column order, dtypes) and serializes the
    response; the pydantic request model validates every field first, so bad input is a 422
    naming the field, and MLEM's catch-all "any exception is a 400" handler can be dropped:
    what is left is a real bug, and a 500 says so. With `fast_predict` (and no MLEM
    middlewares), the decoded columns go to it instead of the model's own predict: on the event
    loop for up to INLINE_ROWS rows (a fraction of a millisecond, less than handing the request
    to a thread and back), in FastAPI's thread pool beyond, where requests waiting at the same
    time are predicted together (gitml.serving.batching), as every request is with the model's
    own predict.
    """

    type: ClassVar[str] = "gitml_fastapi"
    request_models: ClassVar[RequestModels] = {}
    on_predict: ClassVar[PredictHook | None] = None
    batch_rows: ClassVar[int] = 1  # rows one predict may gather from concurrent requests
    fast_predict: ClassVar[Predictor | None] = None
    direct_routes: ClassVar[dict[str, "DirectRoute"]] = {}  # by method, made with its handler

    @classmethod
    def _create_handler_executor(  # type: ignore[no-untyped-def]
        cls, method_name, args, arg_serializers, executor, response_serializer, middlewares
    ):
        request_model = cls.request_models.get(method_name)
        if request_model is None or list(args) != ["data"]:
            return super()._create_handler_executor(
                method_name, args, arg_serializers, executor, response_serializer, middlewares
            )
        response_model = response_serializer.get_model()
        serializer = arg_serializers["data"]
        columns = column_decoder(serializer.data_type)
        fast = cls.fast_predict
        on_predict = cls.on_predict
        inline = 0
        if fast is not None and columns is not None and not middlewares.__root__:
            inline = INLINE_ROWS

            def predict(features: list[dict[str, Any]]) -> list[float]:
                return response_serializer.serialize(fast(columns(features)))  # type: ignore[no-any-return]

        else:
            decode = frame_decoder(serializer.data_type, serializer.deserialize)

            def predict(features: list[dict[str, Any]]) -> list[float]:
                values = middlewares.on_request({"data": decode(features)})
                result = middlewares.on_response(values, executor(**values))
                return response_serializer.serialize(result)  # type: ignore[no-any-return]

        batched = Batcher(predict, cls.batch_rows)

        async def respond(model: Any, request: Request) -> Response:
            rows = [row.dict() for row in model.data.values]
            features = [{name: row[name] for name in FEATURES} for row in rows]  # no event time
            if len(features) <= inline:
                response = predict(features)
            else:
                response = await run_in_threadpool(batched, features)
            if not all(math.isfinite(x) for x in response):
                raise RuntimeError("the model returned a non-finite prediction")
            if on_predict is not None:
                on_predict(request, rows, response)
            # the JSON list MLEM's response model describes, without FastAPI validating it
            # again (in a thread of its own): every value was just checked to be a float
            body = json.dumps(response, allow_nan=False, separators=(",", ":")).encode()
            return Response(body, media_type="application/json")

        async def handler(model: request_model, request: Request):  # type: ignore[valid-type]
            return await respond(model, request)

        handler.__name__ = method_name
        cls.direct_routes[method_name] = DirectRoute(request_model, respond)
        return handler, response_model, None

    def app_init(self, interface: Any) -> FastAPI:
        app = super().app_init(interface)
        app.exception_handlers.pop(Exception, None)
        for name, direct in self.direct_routes.items():  # first: they answer, MLEM's document
            route = Route(f"/{name}", direct, methods=["POST"], include_in_schema=False)
            app.router.routes.insert(0, route)
        return app


class DirectRoute:
    """POST /<method> as a plain ASGI app, put in front of FastAPI's route for it (which stays,
    for the OpenAPI document): the body read, parsed and validated as FastAPI does it, with the
    same errors (a 422 naming the field, FastAPI's 400 for a body JSON cannot read), but
    without FastAPI's per-request machinery (a Request, the content type parsed by the email
    package, dependency solving, an exit stack), which cost more per request than the
    validation and the prediction together."""

    def __init__(
        self, model: type[BaseModel], respond: Callable[[Any, Request], Awaitable[Response]]
    ) -> None:
        self.respond = respond
        self.field = ModelField(
            name="model", type_=model, class_validators=None, model_config=BaseConfig,
            required=True,
        )  # fmt: skip

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        chunks = []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise HTTPException(400, UNPARSED)
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body, value = b"".join(chunks), None
        if body:
            try:
                value = json.loads(body)
            except json.JSONDecodeError as err:
                where = ErrorWrapper(err, ("body", err.pos))
                raise RequestValidationError([where], body=err.doc) from err
            except Exception as err:  # not UTF-8, numbers or nesting beyond what json reads
                raise HTTPException(400, UNPARSED) from err
        if value is None:  # no body, or `null`: what FastAPI calls missing
            missing = ErrorWrapper(MissingError(), loc=("body",))
            raise RequestValidationError([missing], body=value)
        model, errors = self.field.validate(value, {}, loc=("body",))
        if errors:
            found = errors if isinstance(errors, list) else [errors]
            raise RequestValidationError(found, body=value)
        response = await self.respond(model, Request(scope, receive))
        await response(scope, receive, send)


def build_app(
    path: Path,
    request_model: type[BaseModel],
    on_predict: PredictHook | None = None,
    batch_rows: int = 1,
    compiled: bool = True,
) -> tuple[FastAPI, Callable[..., Any]]:
    """MLEM's FastAPI app for the model at `path`, validating `predict` with `request_model`
    and handing every answered request to `on_predict` (the prediction log); requests waiting
    at the same time are predicted together, up to `batch_rows` rows (gitml.serving.batching).
    With `compiled`, the model's compiled form answers where `fast_predictor` gives one.

    Returns:
        The app, and the in-process predict function of the same interface (used to warm up).
    """
    meta = load_meta(str(path), load_value=True)
    fast, serving = None, "the model's own predict (compiling is off)"
    if compiled:
        fast, serving = fast_predictor(meta.get_value(), path)
    say(f"serving: {serving}")
    StrictFastAPIServer.request_models = {"predict": request_model}
    StrictFastAPIServer.on_predict = on_predict
    StrictFastAPIServer.batch_rows = batch_rows
    StrictFastAPIServer.fast_predict = fast
    StrictFastAPIServer.direct_routes = {}
    server = StrictFastAPIServer()
    interface = ServerInterface.create(server, ModelInterface.from_model(meta))
    app = server.app_init(interface)
    serializer = interface.get_method_signature("predict").args[0].get_serializer()
    executor = interface.get_method_executor("predict")

    def predict(rows: list[dict[str, Any]]) -> Any:
        return executor(data=serializer.deserialize({"values": rows}))

    predict([EXAMPLE_ROW])  # the first prediction pays lazy imports and thread-pool start-up
    return app, predict


app = typer.Typer(add_completion=False)


@app.command()
def main(
    model_path: Annotated[Path, typer.Option("--model", help="Trained pipeline.")] = MODEL_FILE,
    splits_dir: Annotated[Path, typer.Option(help="Where the splits are.")] = SPLITS_DIR,
    out: Annotated[Path, typer.Option(help="MLEM model path to write.")] = MLEM_MODEL,
) -> None:
    """Package the trained pipeline with MLEM, recording its input schema from sample rows."""
    sample = as_model_input(read_parquet(split_path("train", splits_dir)).head(SAMPLE_ROWS))
    model = joblib.load(model_path)
    save_model(model, sample, out)
    golden = golden_rows(read_parquet(split_path("test", splits_dir)))
    write_json(out.parent / GOLDEN_FILE, golden_cases(model, golden))
    typer.echo(f"package: {out} (+ .mlem, {GOLDEN_FILE}), model hash {model_hash(out)}")


if __name__ == "__main__":
    app()
