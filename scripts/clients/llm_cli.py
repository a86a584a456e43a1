"""The `llm` CLI: `llm "Say hello"` with its default model (a streamed Responses call), run as a
hard-wired app: HTTPS_PROXY and SSL_CERT_FILE from the environment, OPENAI_API_KEY set to
anything, LLM_USER_PATH a scratch folder (its log database goes there)."""

import subprocess
import sys
from pathlib import Path

import report

LLM = Path(sys.executable).parent / "llm"


def main() -> None:
    args = report.arguments(__doc__)
    report.version(
        subprocess.run([LLM, "--version"], capture_output=True, text=True).stdout.split()[-1]
    )
    command = [str(LLM), *(["-m", args.model] if args.model else []), "Say hello"]

    def prompt() -> tuple[str, str]:
        done = subprocess.run(command, capture_output=True, text=True, timeout=60)
        if done.returncode:
            raise RuntimeError(f"exit {done.returncode}: {done.stderr.strip()[-300:]}")
        return done.stdout, ""

    report.call('llm "Say hello"', args.expect, prompt)


if __name__ == "__main__":
    main()
