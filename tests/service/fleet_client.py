"""The Python client's side of tests/service/fleet_test.ts (issue 11's test plan: "the Python client
submits 6 jobs through replica A, and watches them through B and C"). Run with Debian's python3
(python3-grpcio, python3-protobuf) and clients/python/src on PYTHONPATH:

  fleet_client.py submit HOST:PORT '[{"method": "Train", "request": {...}}, ...]'
      starts each job in turn through that replica; prints {"job_id": ...} per job, once the
      server has named it (the job lives on without the stream, which is closed).
  fleet_client.py watch HOST:PORT JOB_ID
      follows the job to its end with WatchJob; prints each event as one JSON line (proto field
      names) as it arrives, then {"final": STATE}.

Every line is flushed at once: the Deno test acts on events while the job runs.
"""

import json
import sys

from google.protobuf import json_format

import qlorad
from qlorad import pb

REQUESTS = {
    "Quantize": pb.QuantizeRequest,
    "Train": pb.TrainRequest,
    "Evaluate": pb.EvaluateRequest,
}


def say(obj: object) -> None:
    print(json.dumps(obj), flush=True)


def submit(client: qlorad.Client, jobs: list[dict]) -> None:
    for job in jobs:
        request = json_format.ParseDict(job["request"], REQUESTS[job["method"]]())
        stream = getattr(client, job["method"].lower())(request)
        next(stream)  # the first event names the job (or raises the server's refusal)
        stream.close()
        say({"job_id": stream.job_id})


def watch(client: qlorad.Client, job_id: str) -> None:
    stream = client.watch(job_id)
    for event in stream:
        say(json_format.MessageToDict(event, preserving_proto_field_name=True))
    say({"final": pb.JobState.Name(stream.final.state) if stream.final else None})


def main(argv: list[str]) -> int:
    mode, target = argv[1], argv[2]
    # Few retries: a replica the test kills should end the watch, not stall it.
    with qlorad.connect(target, retries=2) as client:
        if mode == "submit":
            submit(client, json.loads(argv[3]))
        elif mode == "watch":
            watch(client, argv[3])
        else:
            raise SystemExit(f"unknown mode {mode!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
