"""What every row's lineage must show (issue 22), checked the same way by the unit tests and
by the end-to-end tests of each modality and of a model trained with DP."""

import re
from typing import Any

HEX64 = re.compile(r"^[0-9a-f]{64}$")


def assert_full_lineage(
    lineage: dict[str, Any], *, explained: bool, dp: bool = False, redacted: bool = False
) -> None:
    """Every field a row's lineage must carry, with values of the right kind."""
    assert HEX64.match(lineage["input_digest"]), lineage
    assert lineage["input_digest_method"] == "hmac-sha256"
    assert lineage["submitted_with"] and lineage["made_by"]["sluice_version"]
    model = lineage["model"]
    assert model["ref"] and model["version"]
    assert HEX64.match(model["weights_sha256"]), model
    made_by = lineage["made_by"]
    assert re.match(r"^[0-9a-f]{16}$", made_by["code"])
    assert "inference_dtype" in made_by["options"]
    assert made_by["isolated"] is False
    if explained:
        explainer = lineage["explainer"]
        assert explainer["method"] and explainer["steps"] >= 1
        assert lineage["explanation"]["method"] == explainer["method"]
    else:
        assert lineage["explainer"] is None and lineage["explanation"] is None
    if dp:
        budget = model["dp"]
        assert budget["epsilon"] > 0 and budget["delta"] > 0 and budget["noise_multiplier"] > 0
        assert model["registry"]["name"] and model["registry"]["version"] >= 1
        assert model["registry"]["sha256"] == model["weights_sha256"]
    else:
        assert model.get("dp") is None
    if redacted:
        assert lineage["redaction"]["mode"] and lineage["redactions_found"]
    else:
        assert lineage["redaction"] is None
