"""The rule a model id follows, wherever one comes from: config.yaml, a client's body, a
provider's /models answer or the OCI control plane."""

import re

# Model ids travel in JSON bodies and URLs: printable, no whitespace, no path tricks.
MODEL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]*$")
MAX_MODEL_ID = 256  # Oracle's ids are short; a longer name is no model's, and logs echo it


def is_model_id(text: str) -> bool:
    """Printable, no whitespace, no %-escapes, no ".." path segments, at most 256 characters."""
    return (
        len(text) <= MAX_MODEL_ID
        and bool(MODEL_ID.fullmatch(text))
        and "/.." not in text
        and "../" not in text
    )
