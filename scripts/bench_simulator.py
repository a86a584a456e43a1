#!/usr/bin/env python3
"""The Oracle simulator as the benchmark runs it: scripts/oracle_simulator.py with two changes.

- A listen backlog of 4096 (socketserver's default is 5): a proxy opening many upstream
  connections at once would otherwise wait for SYN retries (1 s, then 3 s), and the benchmark
  would measure the simulator's backlog instead of the proxy.
- A `filler_size` setting (POST /_sim/settings), the size of the text in each padding delta of a
  chat stream padded with `stream_bytes` (the simulator's own is 16 KiB): a few characters make a
  padded stream many token-sized chunks, as a model's is.

    python scripts/bench_simulator.py <oracle_simulator.py's arguments>
"""

import oracle_simulator

DEFAULT_FILLER_SIZE = oracle_simulator.FILLER_SIZE


def main() -> None:
    oracle_simulator.SimulatorServer.request_queue_size = 4096
    chat_completion = oracle_simulator.Handler.chat_completion

    def sized_chat_completion(self: oracle_simulator.Handler, *args: object) -> None:
        # The module reads FILLER_SIZE per call; every stream of a workload has the same setting.
        settings = self.server.simulator.settings
        oracle_simulator.FILLER_SIZE = int(settings.get("filler_size", DEFAULT_FILLER_SIZE))
        chat_completion(self, *args)

    oracle_simulator.Handler.chat_completion = sized_chat_completion
    oracle_simulator.main()


if __name__ == "__main__":
    main()
