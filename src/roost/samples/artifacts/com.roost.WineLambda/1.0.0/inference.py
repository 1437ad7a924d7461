"""An AWS Lambda handler in the style of the original wine-quality container: pandas + XGBRegressor.

Nothing here knows about Roost; `roost lambda run --handler inference.handler` hosts it unchanged.
"""

import base64
import io
import json
import os

import pandas as pd
import xgboost as xgb

model = xgb.XGBRegressor()
model.load_model(os.environ.get("MODEL_PATH", "xgboost_wine_quality.json"))


def handler(event, context):
    body = event["body"]
    if event.get("isBase64Encoded"):
        body = base64.b64decode(body).decode()
    # io.StringIO: pandas 3 treats a plain string as a path (the original broke there).
    data = pd.read_json(io.StringIO(body))
    result = model.predict(data)
    return {"statusCode": 200, "body": json.dumps(result.tolist())}
