"""A batch container that writes where the job tells it: AIP_MODEL_DIR."""

import json
import os

out = os.environ["AIP_MODEL_DIR"]
with open(os.path.join(out, "predictions.json"), "w") as f:
    json.dump({"rows": 3}, f)
print(f"wrote {out}/predictions.json")
