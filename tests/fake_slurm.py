"""A fake sbatch / squeue / scancel (one script; wrappers pass the command's name) for the failure paths
a real SLURM cannot be made to produce on demand: submissions refused, a queue limit,
jobs that vanish. Its state is a JSON file in $FAKE_SLURM_DIR; jobs stay PENDING.

    $FAKE_SLURM_DIR/mode: "" | "refuse" | "limit N"   (what sbatch does)
    $FAKE_SLURM_DIR/state.json: {"next": id, "jobs": {"12_0": "PENDING"}, "calls": [...]}
"""
import json
import os
import sys

D = os.environ["FAKE_SLURM_DIR"]
STATE = os.path.join(D, "state.json")


def load():
    try:
        with open(STATE) as f:
            return json.load(f)
    except FileNotFoundError:
        return {"next": 100, "jobs": {}, "calls": []}


def save(state):
    with open(STATE + ".tmp", "w") as f:
        json.dump(state, f)
    os.replace(STATE + ".tmp", STATE)


def main():
    cmd, args = sys.argv[1], sys.argv[2:]      # (the wrapper names the command)
    state = load()
    state["calls"].append([cmd, *args])
    try:
        with open(os.path.join(D, "mode")) as f:
            mode = f.read().split()
    except FileNotFoundError:
        mode = []
    code = 0
    if cmd == "sbatch":
        n = 1
        for a in args:
            if a.startswith("--array=0-"):
                n = int(a.rsplit("-", 1)[1]) + 1
        if mode[:1] == ["refuse"]:
            print("sbatch: error: Batch job submission failed: Invalid account or "
                  "account/partition combination specified", file=sys.stderr)
            code = 1
        elif mode[:1] == ["limit"] and len(state["jobs"]) + n > int(mode[1]):
            print("sbatch: error: QOSMaxSubmitJobPerUserLimit", file=sys.stderr)
            print("sbatch: error: Batch job submission failed: Job violates accounting/QOS "
                  "policy (job submit limit, user's size and/or time limits)", file=sys.stderr)
            code = 1
        else:
            job = state["next"]
            state["next"] += 1
            for i in range(n):
                state["jobs"][f"{job}_{i}"] = "PENDING"
            print(job)
    elif cmd == "squeue":
        for job, st in state["jobs"].items():
            print(f"{job} {st}")
    elif cmd == "scancel":
        for a in args:
            if not a.startswith("-"):
                state["jobs"].pop(a, None)
    save(state)
    sys.exit(code)


if __name__ == "__main__":
    main()
