"""openai-python: a chat completion, a streamed one and a Responses call."""

import openai
import report

PROMPT = "Say hello"


def main() -> None:
    args = report.arguments(__doc__)
    report.version(openai.__version__)
    # base_url=None is the SDK's default (OPENAI_BASE_URL, else https://api.openai.com/v1); the
    # key comes from OPENAI_API_KEY, and the gateway drops it.
    client = openai.OpenAI(base_url=args.base_url)
    messages = [{"role": "user", "content": PROMPT}]

    def chat() -> tuple[str, str]:
        answer = client.chat.completions.create(model=args.model, messages=messages)
        return answer.choices[0].message.content or "", ""

    def stream() -> tuple[str, str]:
        chunks = list(
            client.chat.completions.create(model=args.model, messages=messages, stream=True)
        )
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        return text, f"{len(chunks)} chunks"

    def responses() -> tuple[str, str]:
        return client.responses.create(model=args.model, input=PROMPT).output_text, ""

    report.call("chat", args.expect, chat)
    report.call("chat stream", args.expect, stream)
    report.call("responses", args.expect, responses)


if __name__ == "__main__":
    main()
