"""langchain-openai: ChatOpenAI with its defaults, invoke and stream."""

from importlib.metadata import version

import report
from langchain_openai import ChatOpenAI


def main() -> None:
    args = report.arguments(__doc__)
    report.version(version("langchain-openai"))
    options = {"base_url": args.base_url} if args.base_url else {}
    if args.model:
        options["model"] = args.model
    chat = ChatOpenAI(**options)  # default model: gpt-3.5-turbo; key from OPENAI_API_KEY

    def invoke() -> tuple[str, str]:
        return str(chat.invoke("Say hello").content), ""

    def stream() -> tuple[str, str]:
        chunks = list(chat.stream("Say hello"))
        return "".join(str(c.content) for c in chunks), f"{len(chunks)} chunks"

    report.call("invoke", args.expect, invoke)
    report.call("stream", args.expect, stream)


if __name__ == "__main__":
    main()
